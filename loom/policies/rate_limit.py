"""Rate limits as users write them (``"10/minute"``, ``"100/5minutes"``) and the tool globs
a governance policy matches tool names with."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` calls in any ``window`` seconds, for every tool matching ``glob``."""

    glob: str
    limit: int
    window: float
    text: str
    """As written, for reasons the model reads (``"10/minute"``)."""

    @property
    def key(self) -> str:
        """The counter's key in the rate-limit backend, shared by every tool the glob
        matches and by every process on the same backend."""
        return f"governance:{self.glob}"

    def describe(self) -> str:
        count, _, per = self.text.replace(" ", "").partition("/")
        calls = "call" if count == "1" else "calls"
        return f"at most {count} {calls} per {per.lower()} for {self.glob!r}"


def parse_rate_limit(glob: str, text: str) -> RateLimit:
    """``"N/unit"`` or ``"N/Munits"`` (unit: second, minute, hour or day) for ``glob``;
    anything else is a ValueError naming the glob and the text."""
    if not isinstance(text, str):
        raise ValueError(f"rate limit for {glob!r} must be a string like '10/minute', not {text!r}")
    found = _RATE.match(text)
    if found is None:
        raise ValueError(
            f"rate limit for {glob!r} is {text!r}: write 'N/unit' or 'N/Munits' with unit "
            "second, minute, hour or day (e.g. '10/minute', '100/5minutes')"
        )
    count, multiple, unit = int(found[1]), int(found[2] or 1), found[3].lower()
    if count < 1 or multiple < 1:
        raise ValueError(f"rate limit for {glob!r} is {text!r}: the numbers must be at least 1")
    return RateLimit(glob, count, multiple * _UNITS[unit], text.strip())


def check_globs(what: str, globs: Iterable[str]) -> tuple[str, ...]:
    """The globs as a tuple, each a non-empty string (a bare string is a mistake: it would
    be read as one glob per character)."""
    if isinstance(globs, str):
        raise ValueError(f"{what} must be a list of tool-name globs, not the string {globs!r}")
    checked = tuple(globs)
    for glob in checked:
        if not isinstance(glob, str) or not glob.strip():
            raise ValueError(f"{what}: each glob must be a non-empty string, not {glob!r}")
    return checked


def compile_globs(globs: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching a tool name any of ``globs`` matches (fnmatch, case-sensitive:
    ``shell*``, ``mcp__k8s__*``, ``[ab]_tool``), or None for no globs."""
    parts = [fnmatch.translate(glob) for glob in globs]
    return re.compile("|".join(f"(?:{part})" for part in parts)) if parts else None


def first_match(globs: tuple[str, ...], name: str) -> str:
    """The first glob of ``globs`` that matches ``name`` ("" for none)."""
    return next((glob for glob in globs if fnmatch.fnmatchcase(name, glob)), "")
