"""The governance vocabulary: what a rule sees of a tool call (``ToolCallInfo``), what
governance says of it (``Ruling``), the port every governance policy implements
(``Governor``) and the shared counter its rate limits use (``RateLimits``).

The kernel governs tool calls through these, never through a policy class: a policy lives
in ``loom.policies``, a rate-limit backend in ``loom.state``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class Verdict(StrEnum):
    ALLOW = "allow"
    """The call may run."""
    DENY = "deny"
    """The call does not run; the model gets the reason as the call's error result."""
    ASK = "ask"
    """The call runs only once a person approves it; the run waits for the decision."""


@dataclass(frozen=True, slots=True)
class ToolCallInfo:
    """One tool call as a rule sees it: the tool, its arguments and the tool's flags."""

    tool: str
    arguments: Mapping[str, Any]
    call_id: str = ""
    run_id: str = ""
    session_id: str = ""
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    requires_approval: bool | Callable[[ToolCallInfo], bool] = False
    """The tool's own ``@tool(requires_approval=...)``: a flag, or a rule on the call."""


@dataclass(frozen=True, slots=True)
class Ruling:
    """What governance says of one call, and which rule said it (for events and metrics)."""

    verdict: Verdict
    reason: str = ""
    rule: str = ""
    """The rule that decided: ``deny``, ``allow``, ``read_only``, ``destructive``,
    ``veto``, ``approval``, ``rate_limit``, ``hook``, ``error`` (a rule that raised)."""

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


ALLOWED = Ruling(Verdict.ALLOW)


class RateLimits(Protocol):
    """A counter of uses per key over a sliding window, shared by every process that uses
    the same backend (memory: one process; Redis: every replica)."""

    async def take(self, key: str, limit: int, window: float) -> float | None:
        """Count one use of ``key`` if fewer than ``limit`` happened in the last ``window``
        seconds and return None; otherwise count nothing and return the seconds until a
        use is free again."""
        ...


class Governor(Protocol):
    """A governance policy as the kernel uses it.

    ``review`` runs when the model asks for a call, before anything of that turn runs:
    allow, deny, or ask a person. ``admit`` runs just before the call starts (after any
    approval): rate limits, whose uses count only for calls that really run.
    """

    async def review(self, call: ToolCallInfo) -> Ruling: ...

    async def admit(self, call: ToolCallInfo, limits: RateLimits) -> Ruling: ...


__all__ = ["ALLOWED", "Governor", "RateLimits", "Ruling", "ToolCallInfo", "Verdict"]
