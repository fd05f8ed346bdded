"""What a run is judged by and how long work goes on: the quality verdict, the work under
review, and the ports the kernel is handed (``QualityJudge``, ``SprintPolicy``,
``DelegationLimits``). ``loom.policies`` implements them (``QualityGate``, ``Harness``,
``DelegationPolicy``); the kernel only knows these shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from loom.core.messages import Message

Ask = Callable[[str, str], Awaitable[str]]
"""``ask(instructions, prompt)``: one model call without tools, its text back (the kernel
counts its usage on the run)."""


@dataclass(frozen=True, slots=True)
class CriterionVerdict:
    """One criterion as judged: whether it is met, and why."""

    criterion: str
    met: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "met": self.met, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CriterionVerdict:
        return cls(str(data["criterion"]), bool(data["met"]), str(data.get("reason") or ""))


@dataclass(frozen=True, slots=True)
class QualityVerdict:
    """A quality gate's verdict on a run: PASS only when every criterion is met."""

    criteria: tuple[CriterionVerdict, ...]
    sprint: int = 1
    """The sprint it judged (1 for a single run)."""

    @property
    def passed(self) -> bool:
        return all(c.met for c in self.criteria)

    @property
    def unmet(self) -> tuple[CriterionVerdict, ...]:
        return tuple(c for c in self.criteria if not c.met)

    def describe_unmet(self) -> str:
        """The unmet criteria with their reasons, one a line (the failed run's error)."""
        return "\n".join(f"- {c.criterion}: {c.reason or 'not met'}" for c in self.unmet)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "sprint": self.sprint,
            "criteria": [c.to_dict() for c in self.criteria],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityVerdict:
        return cls(
            tuple(CriterionVerdict.from_dict(c) for c in data.get("criteria") or ()),
            sprint=int(data.get("sprint") or 1),
        )


@dataclass(frozen=True, slots=True)
class Review:
    """A finished stretch of work, as a gate sees it."""

    input: str
    """The run's input (the user's message)."""
    output: str
    """The final answer."""
    transcript: Sequence[Message]
    """The run's messages, input first: tool calls and their results included."""
    criteria: tuple[str, ...] = ()
    """The task's own criteria (``RuntimeTask.criteria``), judged with the gate's."""
    ask: Ask | None = None
    """A model call for a judge; None where no model may be asked (a benchmark)."""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def tool_results(self) -> tuple[Message, ...]:
        return tuple(m for m in self.transcript if m.role == "tool")


@runtime_checkable
class QualityJudge(Protocol):
    """Judges a run's work; None when it has nothing to judge (no criterion, no check)."""

    async def evaluate(self, review: Review) -> QualityVerdict | None: ...


@runtime_checkable
class SprintPolicy(Protocol):
    """How many sprints a run may take, and what the agent is told after a failed one."""

    @property
    def max_sprints(self) -> int: ...

    def next_turn(self, verdict: QualityVerdict) -> str: ...


@runtime_checkable
class DelegationLimits(Protocol):
    """How deep sub-agents may nest (the top agent is depth 0) and how many children of
    one model turn run at once."""

    @property
    def max_depth(self) -> int: ...

    @property
    def max_parallel(self) -> int: ...


__all__ = [
    "Ask",
    "CriterionVerdict",
    "DelegationLimits",
    "QualityJudge",
    "QualityVerdict",
    "Review",
    "SprintPolicy",
]
