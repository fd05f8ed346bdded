"""A run: its handle (``Run``), its outcome (``RunResult``) and its event buffer."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from loom import metrics
from loom.core.approvals import Approval, Decision, UnknownApproval
from loom.core.checkpoints import RunCheckpoint, ToolJournal
from loom.core.messages import Usage
from loom.core.quality import QualityVerdict
from loom.errors import RunFailed
from loom.runtime.events import TERMINAL_EVENTS, RunEvent, RunEventType

_STREAMED_ONLY = frozenset({"model.token", "model.thinking", "model.tool_input"})


T = TypeVar("T")


class RunProgress(Protocol):
    """Where a working run has got to (the loop's ``RunState``), as its tree reads it."""

    run: Run
    journal: ToolJournal | None
    working: dict[str, Run]
    """Its sub-agents' runs going on now, by delegation call id."""

    def resume_point(self) -> RunCheckpoint:
        """Where the run could be resumed from now, without repeating a journaled call."""
        ...


class RunSuspended(Exception):
    """The run was suspended while waiting for approvals (see ``Run.suspend``)."""


class RunInterrupted(Exception):
    """An interrupt came while the run waited on a step that can be cut short (a model
    call, a tool that may be stopped): that step was cancelled (``Run.unless_interrupted``)."""


INTERRUPT_GRACE = 1.0
"""Seconds a cancelled step gets to unwind (close its stream) once an interrupt cut it."""


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    AWAITING_APPROVAL = "awaiting_approval"
    """Paused: calls of its last model turn wait for a person's decision."""

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


@dataclass(frozen=True, slots=True)
class Artifact:
    """Something a run produced; every completed run has its text output as one."""

    kind: str
    uri: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunResult:
    """How a run ended. ``status`` is honest: only a run that finished its work completes."""

    run_id: str
    session_id: str
    status: RunStatus
    output: str = ""
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    duration: float = 0.0
    """Seconds from start to end."""
    events: tuple[RunEvent, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    approvals: tuple[Approval, ...] = ()
    """While ``awaiting_approval``: the calls waiting for a decision."""
    checkpoint: RunCheckpoint | None = None
    """While ``awaiting_approval``: everything needed to resume the run in any process."""
    quality: QualityVerdict | None = None
    """The quality gate's verdict on the run's (last sprint's) work, when it was judged."""
    parent_run_id: str | None = None
    """For a sub-agent's run: the run that delegated to it."""
    depth: int = 0
    """0 for a top-level run, 1 for its sub-agents' runs, and so on."""

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.COMPLETED

    def raise_for_status(self) -> RunResult:
        """Return self when completed, else raise ``RunFailed`` with the reason."""
        if not self.ok:
            raise RunFailed(f"run {self.run_id} {self.status.value}: {self.error}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "session_id": self.session_id,
            "status": self.status.value,
            "output": self.output,
            "error": self.error,
            "usage": self.usage.to_dict(),
            "duration": self.duration,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "metadata": self.metadata,
            **({"approvals": [a.to_dict() for a in self.approvals]} if self.approvals else {}),
            **({"quality": self.quality.to_dict()} if self.quality is not None else {}),
            **(
                {"parent_run_id": self.parent_run_id, "depth": self.depth}
                if self.parent_run_id is not None
                else {}
            ),
        }


class Run:
    """Handle of a started run: stream its events, wait for it, cancel or interrupt it.

    ``await run`` is ``await run.wait()``.
    """

    def __init__(self, run_id: str, session_id: str, *, max_events: int = 10_000) -> None:
        self.id = run_id
        self.session_id = session_id
        self.status = RunStatus.PENDING
        self.input = ""
        self._max_events = max_events
        self._events: list[RunEvent] = []
        self._sequence = 0
        self._subscribers: list[asyncio.Queue[RunEvent | None]] = []
        self._done = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[Any] | None = None
        self.cancel_reason: str | None = None
        self.interrupt_reason: str | None = None
        self.streamed = False
        """True for a run started to be streamed (``stream()``): its model calls stream,
        and their text arrives as ``model.token`` events."""
        self.journal: ToolJournal | None = None
        """Where the run records its tool calls once it has a checkpoint (the daemon sets
        one on the shared state; a run that never leaves its process needs none)."""
        self._paused: RunResult | None = None
        self._approvals: dict[str, Approval] = {}
        self._decided = asyncio.Event()
        self._changed = asyncio.get_running_loop().create_future()
        self._suspend = False
        self._interrupted = asyncio.Event()
        self.interrupted_at: float | None = None
        """When the first interrupt reached the run (``time.monotonic()``)."""
        self.checkpointed = False
        """True once the run has had a checkpoint (it paused for approvals, or was resumed
        from one): its end also ends the checkpoint."""
        self.parent_run_id: str | None = None
        self.depth = 0
        self.max_depth: int | None = None
        """A sub-agent's run: the delegation depth its tree may reach (the top run's)."""
        self.children: set[Run] = set()
        """Sub-agents' runs going on now: an interrupt reaches them too."""
        self.state: RunProgress | None = None
        """The loop's state while the run works: a run tree's checkpoint reads where each
        child still working has got to (``RunState.resume_point``)."""

    # -- for the loop -------------------------------------------------------------------
    def attach(self, task: asyncio.Task[Any]) -> None:
        self._task = task

    def emit(self, type_: RunEventType, **payload: Any) -> RunEvent:
        self._sequence += 1
        event = RunEvent(type_, self.id, self.session_id, self._sequence, payload)
        # Token events beyond the bound are still streamed live, just not kept.
        if type_ not in _STREAMED_ONLY or len(self._events) < self._max_events:
            self._events.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)
        return event

    def finish(self, result: RunResult) -> None:
        self.status = result.status
        result.events = tuple(self._events)
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()
        if not self._done.done():
            self._done.set_result(result)

    def pause(self, result: RunResult) -> None:
        """The run waits for people: ``wait()`` returns ``result`` until they decide."""
        self.status = RunStatus.AWAITING_APPROVAL
        self.checkpointed = True
        self._paused = result
        self._approvals = {a.id: a for a in result.approvals}
        self._decided.clear()
        self.emit("run.awaiting_approval", approvals=[a.to_dict() for a in result.approvals])
        self._notify()

    async def decisions(self) -> tuple[Approval, ...]:
        """Wait until every pending approval is decided (expiry decides one as denied);
        raises ``RunSuspended`` when the run is to be suspended instead."""
        loop = asyncio.get_running_loop()
        while True:
            if self._suspend:
                raise RunSuspended(self.id)
            now = datetime.now(UTC)
            for approval in list(self._approvals.values()):
                if not approval.decided and approval.expired(now):
                    self._approvals[approval.id] = approval.expire(now)
            waiting = [a for a in self._approvals.values() if not a.decided]
            if not waiting or self.interrupt_requested():
                self._paused = None
                return tuple(self._approvals.values())
            soonest = min(a.expires_at for a in waiting)
            self._decided.clear()
            delay = max((soonest - now).total_seconds(), 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(loop.time() + delay):
                    await self._decided.wait()

    def resume(self) -> None:
        """The people decided (or an interrupt came): the run goes on."""
        decided = [a.to_dict() for a in self._approvals.values()]
        self.status = RunStatus.RUNNING
        self._paused = None
        self._approvals = {}
        if not self.interrupt_requested():  # it ends at once, as interrupted
            self.emit("run.resumed", approvals=decided)
        self._notify()

    @property
    def decided(self) -> tuple[Approval, ...]:
        """The approvals of the current pause decided so far (in this process)."""
        return tuple(a for a in self._approvals.values() if a.decided)

    def knows(self, approval_id: str) -> bool:
        """Whether ``approval_id`` is one of the current pause's approvals."""
        return approval_id in self._approvals

    def changed(self) -> asyncio.Future[None]:
        """Done at the run's next pause or resume (what a parent run watches a child by)."""
        return self._changed

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        if not changed.done():
            changed.set_result(None)

    def fail_unexpectedly(self, error: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(error)
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()

    # -- public ------------------------------------------------------------------------
    def done(self) -> bool:
        return self._done.done()

    async def wait(self) -> RunResult:
        """The run's result once it ends, or, while it waits for approvals, a result with
        status ``awaiting_approval`` naming them (wait again after deciding them)."""
        while not self._done.done():
            if self._paused is not None:
                return self._paused
            await asyncio.wait((self._done, self._changed), return_when=asyncio.FIRST_COMPLETED)
        result: RunResult = await asyncio.shield(self._done)
        return result

    @property
    def approvals(self) -> tuple[Approval, ...]:
        """The approvals the run waits for (empty unless ``awaiting_approval``)."""
        return tuple(a for a in self._approvals.values() if not a.decided)

    def approve(
        self, approval_id: str, message: str | None = None, *, by: str | None = None
    ) -> Approval:
        """Let the call waiting under ``approval_id`` run."""
        return self.decide(approval_id, Decision.APPROVE, message=message, by=by)

    def deny(
        self, approval_id: str, message: str | None = None, *, by: str | None = None
    ) -> Approval:
        """Refuse the call waiting under ``approval_id``; the model is told, with ``message``."""
        return self.decide(approval_id, Decision.DENY, message=message, by=by)

    def decide(
        self,
        approval_id: str,
        decision: Decision | str,
        *,
        message: str | None = None,
        digest: str | None = None,
        by: str | None = None,
    ) -> Approval:
        """Record a decision; raises an ``ApprovalError`` saying why it cannot be taken
        (unknown, already decided otherwise, digest of other arguments, expired)."""
        approval = self._approvals.get(approval_id)
        if approval is None:
            raise UnknownApproval(f"run {self.id} waits for no approval {approval_id!r}")
        decided = approval.decide(decision, message=message, digest=digest, by=by)
        if decided is not approval:
            metrics.approval_decided(decided)
        self._take(decided)
        return decided

    def record_decision(self, approval: Approval) -> None:
        """Take a decision already taken elsewhere (the daemon's state, which checked it):
        the run goes on once every approval it waits for is decided."""
        if approval.decided and approval.id in self._approvals:
            self._take(approval)

    def _take(self, approval: Approval) -> None:
        self._approvals[approval.id] = approval
        if all(a.decided for a in self._approvals.values()):
            self._paused = None  # wait() now waits for what comes next
        self._decided.set()

    @property
    def suspending(self) -> bool:
        """``suspend()`` was asked for: the run hands back its checkpoint."""
        return self._suspend

    def suspend(self) -> bool:
        """Stop waiting here: the run ends in this process as ``awaiting_approval`` with a
        checkpoint, to be resumed from it wherever its decisions arrive (the daemon)."""
        if self.status is not RunStatus.AWAITING_APPROVAL or self.done():
            return False
        self._suspend = True
        self._paused = None  # wait() returns once the run has handed back its checkpoint
        self._decided.set()
        return True

    def __await__(self) -> Any:
        return self.wait().__await__()

    async def artifacts(self) -> tuple[Artifact, ...]:
        return (await self.wait()).artifacts

    async def events(self) -> AsyncIterator[RunEvent]:
        """Every event of the run from the first, then live ones until it ends."""
        queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()
        for event in self._events:
            queue.put_nowait(event)
        if self.done():
            queue.put_nowait(None)
        else:
            self._subscribers.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
                if item.type in TERMINAL_EVENTS:
                    return
        finally:
            if queue in self._subscribers:
                self._subscribers.remove(queue)

    def interrupt_requested(self) -> bool:
        return self.interrupt_reason is not None

    def cancel(self, reason: str = "cancelled") -> bool:
        """Stop now: the step in flight is abandoned and every open tool call gets a result.

        Returns False when the run had already finished (or is announcing its end).
        """
        if self.done() or self.status.finished or self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        self._paused = None
        # A task cancelled before its first step never runs its body, so nothing would end
        # the run and wait() would hang; such a task sees cancel_reason when it starts.
        if self._task is not None and not _not_started(self._task):
            self._task.cancel(reason)
        return True

    def interrupt(self, reason: str = "interrupted") -> bool:
        """Stop at the next step boundary (after a model call, between tool calls)."""
        if self.done() or self.status.finished:
            return False
        self.interrupt_reason = self.interrupt_reason or reason
        self._paused = None  # a run waiting for approvals stops waiting
        self._decided.set()
        if self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
        self._interrupted.set()  # a model call or stoppable tool in flight is cut short
        for child in list(self.children):
            child.interrupt(reason)
        return True

    async def unless_interrupted(self, step: Awaitable[T]) -> T:
        """Await ``step`` unless an interrupt comes first: then the step is cancelled (a
        model call's stream is closed with it) and ``RunInterrupted`` raised. The step gets
        ``INTERRUPT_GRACE`` seconds to unwind, so the run ends within a bounded time."""
        if self.interrupt_requested():
            if inspect.iscoroutine(step):
                step.close()  # never started: nothing to unwind
            raise RunInterrupted(self.id)
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self._interrupted.wait())
        try:
            await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                # Unwinding past the grace is left behind: the run ends on time regardless.
                await asyncio.wait((task,), timeout=INTERRUPT_GRACE)
        if not task.done() or task.cancelled():
            raise RunInterrupted(self.id)
        return task.result()

    def __repr__(self) -> str:
        return f"<Run {self.id} session={self.session_id} {self.status.value}>"


def _not_started(task: asyncio.Task[Any]) -> bool:
    coro = task.get_coro()
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
