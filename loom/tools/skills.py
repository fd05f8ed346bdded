"""Skills: instructions an agent loads when it decides a task fits them.

The model sees each skill's name and ``when_to_use`` in the ``C_skill`` partition of its
request (within that partition's budget), and reads a skill's body only by calling the one
``load_skill`` tool: a run that needs no skill pays for none, a loaded body is a tool
result like any other, and no keyword match decides for the model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from loom.tools.tool import Tool

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
MAX_SKILL_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Skill:
    """A named body of instructions and when the model should load it."""

    name: str
    content: str
    when_to_use: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"skill name {self.name!r}: 1-64 characters from letters, digits, '_', '.', "
                "'-', starting with a letter or digit"
            )
        if not isinstance(self.content, str) or not self.content.strip():
            raise ValueError(f"skill {self.name!r} has no content")
        if not isinstance(self.when_to_use, str) or not self.when_to_use.strip():
            raise ValueError(f"skill {self.name!r} needs when_to_use: say when to load it")


def parse_skill_file(text: str, where: str) -> Skill:
    """A ``SKILL.md``: YAML front matter (``name``, ``when_to_use``) and the body."""
    found = _FRONT_MATTER.match(text)
    if found is None:
        raise ValueError(f"{where}: no front matter (a '---' block with name and when_to_use)")
    try:
        meta = yaml.safe_load(found.group(1))
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: front matter is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: front matter must be a mapping with name and when_to_use")
    when = meta.get("when_to_use", meta.get("description"))
    try:
        return Skill(
            name=str(meta.get("name", "")),
            content=text[found.end() :].strip(),
            when_to_use="" if when is None else str(when),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_skills_dir(path: str | os.PathLike[str]) -> list[Skill]:
    """One skill per ``<path>/<folder>/SKILL.md``, in folder order."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"skills directory {str(root)!r} does not exist or is not a directory")
    skills = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        file = folder / "SKILL.md"
        if not file.is_file():
            continue
        if file.stat().st_size > MAX_SKILL_BYTES:
            raise ValueError(f"{file}: larger than {MAX_SKILL_BYTES} bytes")
        skills.append(parse_skill_file(file.read_text(encoding="utf-8"), str(file)))
    if not skills:
        raise ValueError(f"skills directory {str(root)!r} holds no <folder>/SKILL.md")
    check_unique(skills)
    return skills


def check_unique(skills: Iterable[Skill]) -> None:
    seen: set[str] = set()
    for skill in skills:
        if skill.name in seen:
            raise ValueError(f"two skills are named {skill.name!r}: skill names must be unique")
        seen.add(skill.name)


def skill_listing(skills: Sequence[Skill]) -> tuple[tuple[str, str], ...]:
    """``(name, when_to_use)`` of each skill, what ``C_skill`` lists."""
    return tuple((skill.name, skill.when_to_use) for skill in skills)


def skills_tool(skills: Sequence[Skill]) -> Tool[..., str]:
    """The ``load_skill`` tool; a call answers with the skill's body. The skills themselves
    are listed in the request's ``C_skill`` partition, not in this tool's description:
    there the context budget applies to them."""
    check_unique(skills)
    by_name = {skill.name: skill for skill in skills}

    def load_skill(name: str) -> str:
        """Load a skill's instructions.

        Args:
            name: The skill's name, as listed.
        """
        skill = by_name.get(name)
        if skill is None:
            raise ValueError(f"no skill named {name!r}; skills: {', '.join(by_name)}")
        return f"# Skill: {skill.name}\n\n{skill.content}"

    description = (
        "Load the instructions of a skill when the task fits it; read them before acting. "
        "The skills are listed under 'Skills' in your instructions."
    )
    return Tool(load_skill, description=description, read_only=True, idempotent=True)


__all__ = ["Skill", "load_skills_dir", "parse_skill_file", "skill_listing", "skills_tool"]
