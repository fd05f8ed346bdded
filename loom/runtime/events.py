"""The typed event stream of a run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

RunEventType = Literal[
    "run.started",
    "model.request",
    "model.token",
    "model.thinking",
    "model.tool_input",
    "model.response",
    "model.interrupted",
    "tool.started",
    "tool.completed",
    "tool.denied",
    "run.awaiting_approval",
    "run.resumed",
    "run.suspended",
    "context.compacted",
    "quality.judging",
    "quality.verdict",
    "harness.sprint",
    "subagent.started",
    "subagent.completed",
    "subagent.suspended",
    "subagent.resumed",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.interrupted",
]

TERMINAL_EVENTS: frozenset[str] = frozenset(
    {"run.completed", "run.failed", "run.cancelled", "run.interrupted", "run.suspended"}
)


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One thing that happened in a run, in order (``sequence`` starts at 1)."""

    type: RunEventType
    run_id: str
    session_id: str
    sequence: int
    payload: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "run_id": self.run_id,
            "session_id": self.session_id,
            "sequence": self.sequence,
            "at": self.at,
            "payload": self.payload,
        }
