"""Capability: a named bundle of tools an agent can be given.

``Capability.toolset`` groups your own tools; the built-in capabilities (files, web, shell,
skills) compile to ordinary tools with honest flags, so every call goes through the same
governed path (docs/capabilities.md, docs/governance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from loom.tools import Tool, tool
from loom.tools.confined import DEFAULT_EXCLUDE
from loom.tools.files import Files, FilesOptions
from loom.tools.shell import Shell, ShellOptions
from loom.tools.skills import Skill, load_skills_dir
from loom.tools.web import Web, WebOptions
from loom.tools.web_search import SearchBackend


class Capability:
    """What an agent can do; compiles to tools that go through the same governed path."""

    def __init__(
        self,
        name: str,
        tools: Iterable[Tool[..., Any] | Callable[..., Any]] = (),
        *,
        skills: Iterable[Skill] = (),
    ) -> None:
        self.name = name
        self._tools = tuple(t if isinstance(t, Tool) else tool(t) for t in tools)
        self.skills: tuple[Skill, ...] = tuple(skills)
        """Skills this capability brings: the agent offers their names and when_to_use,
        and one ``load_skill`` tool for all of them (their own tools are in ``tools()``)."""

    def tools(self) -> Sequence[Tool[..., Any]]:
        return self._tools

    @classmethod
    def toolset(
        cls, *tools: Tool[..., Any] | Callable[..., Any], name: str = "toolset"
    ) -> Capability:
        return cls(name, tools)

    @classmethod
    def files(
        cls,
        root: str | os.PathLike[str] = ".",
        *,
        read_only: bool = True,
        max_read_bytes: int = 256 * 1024,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        max_results: int = 500,
    ) -> Capability:
        """Read, list (glob) and search (regex) files under ``root``; write and edit
        (destructive) unless ``read_only``. Confined by the kernel's view of the tree:
        ``..``, absolute paths, symlinks anywhere and hard-linked files are refused.
        ``exclude`` (names, globs) defaults to ``.git`` and ``.env*``. A root that does
        not exist is a ValueError here."""
        options = FilesOptions(
            read_only=read_only, max_read_bytes=max_read_bytes, max_results=max_results
        )
        return cls("files", Files(root, exclude=exclude, options=options).tools())

    @classmethod
    def web(
        cls,
        *,
        allow_private: bool = False,
        allow_hosts: Iterable[str] | None = None,
        max_bytes: int = 2 * 1024 * 1024,
        timeout: float = 20.0,
        max_redirects: int = 5,
        search: SearchBackend | None = None,
    ) -> Capability:
        """``fetch_url``: a web page as text, from public addresses only unless
        ``allow_private`` (or the host is in ``allow_hosts``, which then also limits
        fetches to those hosts); with a ``search`` backend, ``web_search`` too."""
        options = WebOptions(
            allow_private=allow_private,
            allow_hosts=None if allow_hosts is None else tuple(allow_hosts),
            max_bytes=max_bytes,
            timeout=timeout,
            max_redirects=max_redirects,
        )
        return cls("web", Web(options, search=search).tools())

    @classmethod
    def shell(
        cls,
        *,
        require_approval: bool = True,
        timeout: float = 60.0,
        max_output_bytes: int = 64 * 1024,
        allow: Iterable[str] = (),
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Capability:
        """``run_command``: a command line run by ``/bin/sh -c`` in ``cwd`` (default: the
        current directory), no stdin, a scrubbed environment, the whole process group
        ended on timeout. Each call waits for a person's approval (the request shows the
        exact command) unless ``require_approval=False`` or the command matches an
        ``allow`` regular expression (the whole command must match)."""
        options = ShellOptions(
            require_approval=require_approval,
            timeout=timeout,
            max_output_bytes=max_output_bytes,
            allow=tuple(allow),
            env=dict(env or {}),
        )
        return cls("shell", [Shell(cwd or os.getcwd(), options).tool()])

    @classmethod
    def skill(
        cls,
        name: str,
        *,
        content: str,
        when_to_use: str,
        tools: Iterable[Tool[..., Any] | Callable[..., Any]] = (),
    ) -> Capability:
        """A skill: the agent sees ``name`` and ``when_to_use`` and loads ``content`` with
        the ``load_skill`` tool when it decides to; ``tools`` come with the skill."""
        return cls(
            f"skill:{name}",
            tools,
            skills=[Skill(name=name, content=content, when_to_use=when_to_use)],
        )

    @classmethod
    def skills_dir(cls, path: str | os.PathLike[str]) -> Capability:
        """Every ``<path>/<folder>/SKILL.md`` (YAML front matter with ``name`` and
        ``when_to_use``, then the body) as a skill."""
        return cls("skills", skills=load_skills_dir(path))

    def __repr__(self) -> str:
        return f"<Capability {self.name} tools={[t.name for t in self._tools]}>"
