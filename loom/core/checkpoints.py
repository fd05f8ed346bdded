"""A run paused between steps (``RunCheckpoint``) and the journal of its tool calls
(``ToolJournal``): what lets a run that waits for a person be resumed by any process.

A checkpoint is taken when a model turn asks for calls that need approval: the run's
transcript so far (ending with that turn), the turn's calls and the results already known
(denied calls), the calls waiting to run, the approvals, the iteration and the usage. The
journal then records each call of the run as started and finished, so a run resumed after
a crash never starts a call twice: a call found started but not finished is reported to
the model as of unknown outcome, unless its tool is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from loom.core.approvals import Approval
from loom.core.messages import Message, ToolCall, Usage


@dataclass(frozen=True, slots=True)
class RunCheckpoint:
    """Everything needed to go on with a run from its last model turn, in any process."""

    run_id: str
    session_id: str
    input: str
    iteration: int
    """The model turn whose calls wait (the next model call is ``iteration + 1``)."""
    transcript: tuple[Message, ...]
    """The run's messages so far, the user's input first, the waiting turn last."""
    calls: tuple[ToolCall, ...]
    """The waiting turn's calls, in the model's order."""
    results: dict[str, Message] = field(default_factory=dict)
    """Results already known (calls denied by governance), by call id."""
    approvals: tuple[Approval, ...] = ()
    usage: Usage = field(default_factory=Usage)
    output: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    elapsed: float = 0.0
    """Seconds the run has worked so far, waits for people excluded (its timeout's clock)."""
    children: dict[str, RunCheckpoint] = field(default_factory=dict)
    """Sub-agents' runs suspended with this one, by the id of the delegation call that
    started each: a run tree is suspended whole, and each child resumes from its own
    checkpoint. Their approvals are listed in ``approvals`` too (where decisions land)."""

    running: tuple[str, ...] = ()
    """Calls of the waiting turn that had started, without a result, when the checkpoint
    was taken (they began before the run's tree had a checkpoint, so the journal may not
    know them): resumed, one the journal has no result for is of unknown outcome."""

    @property
    def pending(self) -> tuple[Approval, ...]:
        """The approvals not decided yet."""
        return tuple(a for a in self.approvals if not a.decided)

    def approval(self, approval_id: str) -> Approval | None:
        return next((a for a in self.approvals if a.id == approval_id), None)

    def with_approval(self, approval: Approval) -> RunCheckpoint:
        approvals = tuple(approval if a.id == approval.id else a for a in self.approvals)
        return replace(self, approvals=approvals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "session_id": self.session_id,
            "input": self.input,
            "iteration": self.iteration,
            "transcript": [m.to_dict() for m in self.transcript],
            "calls": [c.to_dict() for c in self.calls],
            "results": {k: m.to_dict() for k, m in self.results.items()},
            "approvals": [a.to_dict() for a in self.approvals],
            "usage": self.usage.to_dict(),
            "output": self.output,
            "metadata": self.metadata,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "elapsed": self.elapsed,
            **(
                {"children": {k: c.to_dict() for k, c in self.children.items()}}
                if self.children
                else {}
            ),
            **({"running": list(self.running)} if self.running else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunCheckpoint:
        started = data.get("started_at")
        return cls(
            run_id=data["run_id"],
            session_id=data["session_id"],
            input=data.get("input") or "",
            iteration=int(data["iteration"]),
            transcript=tuple(Message.from_dict(m) for m in data.get("transcript") or ()),
            calls=tuple(ToolCall.from_dict(c) for c in data.get("calls") or ()),
            results={k: Message.from_dict(m) for k, m in (data.get("results") or {}).items()},
            approvals=tuple(Approval.from_dict(a) for a in data.get("approvals") or ()),
            usage=Usage.from_dict(data.get("usage") or {}),
            output=data.get("output") or "",
            metadata=dict(data.get("metadata") or {}),
            started_at=datetime.fromisoformat(started) if started else None,
            elapsed=float(data.get("elapsed") or 0.0),
            children={k: cls.from_dict(c) for k, c in (data.get("children") or {}).items()},
            running=tuple(str(c) for c in data.get("running") or ()),
        )

    def decided_by(self, known: dict[str, Approval]) -> RunCheckpoint:
        """This checkpoint with the decisions ``known`` (by approval id) taken on its
        approvals: a child's checkpoint learns what was decided on its parent's."""
        approvals = tuple(
            known[a.id] if not a.decided and a.id in known and known[a.id].decided else a
            for a in self.approvals
        )
        return replace(self, approvals=approvals)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One tool call of a run as the journal saw it."""

    call_id: str
    finished: bool = False
    content: str = ""
    is_error: bool = False


class ToolJournal(Protocol):
    """Where a checkpointed run records its tool calls (the daemon: the state backend,
    written under the session's fencing token)."""

    async def entries(self, run_id: str) -> dict[str, JournalEntry]: ...

    async def started(self, run_id: str, call_id: str) -> None: ...

    async def finished(self, run_id: str, call_id: str, content: str, is_error: bool) -> None: ...

    async def turn(self, checkpoint: RunCheckpoint) -> None:
        """Keep ``checkpoint`` (a model turn whose calls are about to run) as the point to
        resume from: a run resumed after a crash then never asks the model for that turn
        again, so its calls keep their ids and the journal knows them."""
        ...


class MemoryToolJournal:
    """A journal in this process's memory: the default, for runs that never leave it."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, JournalEntry]] = {}
        self.latest: RunCheckpoint | None = None

    async def entries(self, run_id: str) -> dict[str, JournalEntry]:
        return dict(self._runs.get(run_id, {}))

    async def started(self, run_id: str, call_id: str) -> None:
        self._runs.setdefault(run_id, {})[call_id] = JournalEntry(call_id)

    async def finished(self, run_id: str, call_id: str, content: str, is_error: bool) -> None:
        self._runs.setdefault(run_id, {})[call_id] = JournalEntry(
            call_id, finished=True, content=content, is_error=is_error
        )

    async def turn(self, checkpoint: RunCheckpoint) -> None:
        self.latest = checkpoint

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)


__all__ = ["JournalEntry", "MemoryToolJournal", "RunCheckpoint", "ToolJournal"]
