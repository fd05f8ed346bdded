"""The context vocabulary: partitions, the stored summary and handoff, and the context ports.

A session's transcript is never rewritten. What compaction produces is kept beside it as a
:class:`StoredContext`: a summary of "everything up to entry N" (entries are numbered from
the session's first message, so the number stays true as a store's window slides), the
latest :class:`Handoff`, and the session's token calibration. The kernel reads the policies
below through these ports; ``loom.policies`` implements them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from loom.core.messages import Message

PARTITIONS = ("C_system", "C_working", "C_memory", "C_skill", "C_history")
"""A request is rendered from these, in this order: instructions, the working state
(signals, risks, evidence, the handoff), memory (the stored summary), skills, history."""

COMPACTION_STEPS = ("shorten_tool_results", "summarize", "drop_oldest_turns")
"""The steps compaction may take, cheapest first."""


def _now() -> datetime:
    return datetime.now(UTC)


def _time(text: str | None) -> datetime:
    return _now() if not text else datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ContextSummary:
    """A model-written summary of a session's entries ``[0, upto)``."""

    upto: int
    text: str
    run_id: str = ""
    updated_at: datetime = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "upto": self.upto,
            "text": self.text,
            "run_id": self.run_id,
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextSummary:
        return cls(
            upto=int(data["upto"]),
            text=str(data["text"]),
            run_id=str(data.get("run_id", "")),
            updated_at=_time(data.get("updated_at")),
        )


@dataclass(frozen=True, slots=True)
class Handoff:
    """What the next request needs to carry on after compaction: goal, state, open items
    and risks. It is injected into ``C_working``."""

    goal: str
    state: str
    open_items: tuple[str, ...] = ()
    risks: tuple[str, ...] = ()
    upto: int = 0
    created_at: datetime = field(default_factory=_now)

    def render(self) -> str:
        lines = [f"Goal: {self.goal}", f"State: {self.state}"]
        if self.open_items:
            lines.append("Open items:\n" + "\n".join(f"- {item}" for item in self.open_items))
        if self.risks:
            lines.append("Risks:\n" + "\n".join(f"- {risk}" for risk in self.risks))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal,
            "state": self.state,
            "open_items": list(self.open_items),
            "risks": list(self.risks),
            "upto": self.upto,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Handoff:
        return cls(
            goal=str(data.get("goal", "")),
            state=str(data.get("state", "")),
            open_items=tuple(str(item) for item in data.get("open_items", ())),
            risks=tuple(str(risk) for risk in data.get("risks", ())),
            upto=int(data.get("upto", 0)),
            created_at=_time(data.get("created_at")),
        )


@dataclass(slots=True)
class StoredContext:
    """What a session store keeps beside the transcript for the context manager."""

    summary: ContextSummary | None = None
    handoff: Handoff | None = None
    tokens_per_char: float | None = None
    """Provider-reported input tokens per estimated character, learnt from the last answer."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": None if self.summary is None else self.summary.to_dict(),
            "handoff": None if self.handoff is None else self.handoff.to_dict(),
            "tokens_per_char": self.tokens_per_char,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoredContext:
        summary, handoff = data.get("summary"), data.get("handoff")
        ratio = data.get("tokens_per_char")
        return cls(
            summary=None if summary is None else ContextSummary.from_dict(summary),
            handoff=None if handoff is None else Handoff.from_dict(handoff),
            tokens_per_char=None if ratio is None else float(ratio),
        )

    def copy(self) -> StoredContext:
        return StoredContext(self.summary, self.handoff, self.tokens_per_char)


@runtime_checkable
class WorkingItem(Protocol):
    """A ``C_working`` item that renders itself within the room it is given (a summary of
    signals and risks: counts always, details as they fit). Plain text items are ``str``."""

    def render(self, max_chars: int) -> str:
        """The item in at most about ``max_chars`` characters."""
        ...


class ContextPolicy(ABC):
    """Port: how big a request may be, how it is split, and when and how far to compact."""

    max_tokens: int
    budgets: Mapping[str, int]
    """Tokens each partition may take; ``C_history`` gets what the others leave."""
    trigger: float
    """Compact when a request would reach this share of ``max_tokens``..."""
    target: float
    """...down to this share."""
    compaction: tuple[str, ...]
    """The steps compaction takes, in order (a subset of ``COMPACTION_STEPS``)."""
    keep_tool_result_chars: int
    """What the first step leaves of a tool result older than the last turn."""


class ContinuityPort(ABC):
    """Port: what a session carries over when it is compacted or renewed."""

    @abstractmethod
    def handoff(
        self, *, goal: str, summary: str, recent: Sequence[Message], risks: Sequence[str], upto: int
    ) -> Handoff | None:
        """The handoff to store and inject into the next request, or None for none."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What of a stored session enters a run."""

    messages: list[Message]
    summary: bool
    """Whether the stored summary (the transcript's memory) comes with it."""
    runtime_items: int | None
    """How many working-state items (handoff, evidence) may enter ``C_working``; None: all."""


class RestorePort(ABC):
    """Port: decides what of a stored session enters each run, every time it is loaded."""

    @abstractmethod
    def restore(self, messages: Sequence[Message]) -> Restored:
        """Choose from the stored transcript window (oldest first)."""
