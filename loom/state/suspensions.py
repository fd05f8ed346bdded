"""``Suspensions``: runs that wait for people, kept where every replica sees them.

A session has at most one suspended run (a session runs one run at a time). Its
checkpoint (``loom.core.checkpoints.RunCheckpoint``) is written by the worker that paused
it, under the session's fencing token, as soon as the run pauses: from then on a decision
can be taken at any replica, and any worker can resume the run. The journal of the run's
tool calls is written under the same token. ``MemorySuspensions`` is the port's in-process
implementation; ``RedisSuspensions`` (``loom.state.redis_suspensions``) the shared one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from loom.core.approvals import (
    Approval,
    ApprovalExpired,
    ApprovalGone,
    Decision,
    UnknownApproval,
)
from loom.core.checkpoints import JournalEntry, RunCheckpoint

Fence = Callable[[str, int], Awaitable[None]]
"""``check_fence(session_id, token)``: raises ``StaleFencingToken`` for an old token."""


class Suspensions(ABC):
    """Suspended runs' checkpoints, the decisions on their approvals, and their journals."""

    @abstractmethod
    async def save(self, checkpoint: RunCheckpoint, token: int) -> None:
        """Keep ``checkpoint`` as the session's suspended run, if ``token`` is still the
        session's fencing token (else ``StaleFencingToken``). Decisions already taken on
        the stored checkpoint of the same run are kept (``keeping_decisions``), atomically:
        a run tree's checkpoint is written again while people decide on it."""

    @abstractmethod
    async def load(self, session_id: str) -> RunCheckpoint | None:
        """The session's suspended run, with every decision taken on it so far."""

    @abstractmethod
    async def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision,
        *,
        message: str | None = None,
        digest: str | None = None,
        by: str | None = None,
    ) -> tuple[Approval, bool]:
        """Take a decision atomically: the first one counts. Returns the approval as
        decided and whether this call decided it (False: the same decision was taken
        before). Raises the ``ApprovalError`` that says why it cannot be taken."""

    @abstractmethod
    async def discard(self, session_id: str, run_id: str, token: int) -> None:
        """The run ``run_id`` ended: forget its checkpoint and journal (fenced; a
        checkpoint of another run is left alone). Its approvals are remembered as they
        ended for ``CLOSED_TTL``, so a late decision is answered truthfully (already
        decided, expired, or gone) rather than as unknown."""

    @abstractmethod
    async def resumable(self, now: datetime, limit: int = 100) -> list[str]:
        """Sessions whose suspended run can go on by ``now``: every approval decided, or
        one expired. Workers sweep for them, so a run resumes even when the signal that
        announced its decision was lost."""

    @abstractmethod
    async def count(self) -> int:
        """How many runs are suspended."""

    async def suspended_sessions(self, limit: int = 1000) -> list[str]:
        """Sessions with a suspended run (at most ``limit``), the soonest to resume first:
        every suspended run can go on by the end of time (its approvals expire)."""
        return await self.resumable(datetime.max.replace(tzinfo=UTC), limit)

    @abstractmethod
    async def journal(self, session_id: str, run_id: str) -> dict[str, JournalEntry]:
        """The run's journaled tool calls, by call id."""

    @abstractmethod
    async def journal_started(
        self, session_id: str, run_id: str, call_id: str, token: int
    ) -> None: ...

    @abstractmethod
    async def journal_finished(
        self,
        session_id: str,
        run_id: str,
        call_id: str,
        content: str,
        is_error: bool,
        token: int,
    ) -> None: ...


CLOSED_TTL = 7 * 86_400.0
"""Seconds an ended run's approvals are remembered (see ``Suspensions.discard``)."""
MAX_CLOSED = 10_000
"""Ended approvals the memory backend remembers."""


def closed_approvals(checkpoint: RunCheckpoint, now: datetime | None = None) -> list[Approval]:
    """How the checkpoint's approvals ended: decided, expired, or left undecided."""
    now = now or datetime.now(UTC)
    return [a.expire(now) if not a.decided and a.expired(now) else a for a in checkpoint.approvals]


def decide_closed(
    approval: Approval | None,
    decision: Decision,
    *,
    session_id: str,
    approval_id: str,
    digest: str | None,
) -> tuple[Approval, bool]:
    """A decision on an approval whose run ended: the same one again is answered with the
    first; anything else says why it cannot be taken."""
    if approval is None or approval.session_id != session_id:
        raise UnknownApproval(f"session {session_id!r} waits for no approval {approval_id!r}")
    if approval.lapsed:
        raise ApprovalExpired(
            f"approval {approval_id} expired at {approval.expires_at.isoformat()}"
        )
    if not approval.decided:
        raise ApprovalGone(f"approval {approval_id}: its run ended without waiting for it")
    return approval.decide(decision, digest=digest), False


def keeping_decisions(checkpoint: RunCheckpoint, stored: RunCheckpoint | None) -> RunCheckpoint:
    """``checkpoint`` with the decisions taken on ``stored`` (the same run's, as kept):
    what a worker writes never undoes a decision taken meanwhile on another replica."""
    if stored is None or stored.run_id != checkpoint.run_id:
        return checkpoint
    return checkpoint.decided_by({a.id: a for a in stored.approvals if a.decided})


def resumable_at(checkpoint: RunCheckpoint) -> datetime:
    """When the suspended run can go on: when its first undecided approval expires, or
    (every approval decided) since the last decision."""
    pending = checkpoint.pending
    if pending:
        return min(a.expires_at for a in pending)
    decided_at = [a.decided_at for a in checkpoint.approvals if a.decided_at is not None]
    return max(decided_at, default=datetime.fromtimestamp(0, UTC))


def decided(
    checkpoint: RunCheckpoint | None,
    approval_id: str,
    decision: Decision,
    *,
    session_id: str,
    message: str | None,
    digest: str | None,
    by: str | None,
) -> tuple[RunCheckpoint, Approval, bool]:
    """``checkpoint`` with the decision taken (the rules of ``Approval.decide``)."""
    approval = checkpoint.approval(approval_id) if checkpoint is not None else None
    if checkpoint is None or approval is None:
        raise UnknownApproval(f"session {session_id!r} waits for no approval {approval_id!r}")
    after = approval.decide(decision, message=message, digest=digest, by=by)
    return checkpoint.with_approval(after), after, after is not approval


class MemorySuspensions(Suspensions):
    """The port in this process's memory (the embedded default and the tests)."""

    def __init__(self, fence: Fence) -> None:
        self._fence = fence
        self._checkpoints: dict[str, RunCheckpoint] = {}
        self._journals: dict[tuple[str, str], dict[str, JournalEntry]] = {}
        self._closed: OrderedDict[str, Approval] = OrderedDict()

    async def save(self, checkpoint: RunCheckpoint, token: int) -> None:
        await self._fence(checkpoint.session_id, token)
        stored = self._checkpoints.get(checkpoint.session_id)
        self._checkpoints[checkpoint.session_id] = keeping_decisions(checkpoint, stored)

    async def load(self, session_id: str) -> RunCheckpoint | None:
        return self._checkpoints.get(session_id)

    async def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision,
        *,
        message: str | None = None,
        digest: str | None = None,
        by: str | None = None,
    ) -> tuple[Approval, bool]:
        stored = self._checkpoints.get(session_id)
        if stored is None or stored.approval(approval_id) is None:
            return decide_closed(
                self._closed.get(approval_id),
                decision,
                session_id=session_id,
                approval_id=approval_id,
                digest=digest,
            )
        checkpoint, approval, fresh = decided(
            stored,
            approval_id,
            decision,
            session_id=session_id,
            message=message,
            digest=digest,
            by=by,
        )
        self._checkpoints[session_id] = checkpoint
        return approval, fresh

    async def discard(self, session_id: str, run_id: str, token: int) -> None:
        await self._fence(session_id, token)
        checkpoint = self._checkpoints.get(session_id)
        if checkpoint is not None and checkpoint.run_id == run_id:
            del self._checkpoints[session_id]
            for approval in closed_approvals(checkpoint):
                self._closed[approval.id] = approval
            while len(self._closed) > MAX_CLOSED:
                self._closed.popitem(last=False)
        self._journals.pop((session_id, run_id), None)

    async def resumable(self, now: datetime, limit: int = 100) -> list[str]:
        ready = sorted(
            (resumable_at(checkpoint), session_id)
            for session_id, checkpoint in self._checkpoints.items()
            if resumable_at(checkpoint) <= now
        )
        return [session_id for _, session_id in ready[:limit]]

    async def count(self) -> int:
        return len(self._checkpoints)

    async def journal(self, session_id: str, run_id: str) -> dict[str, JournalEntry]:
        return dict(self._journals.get((session_id, run_id), {}))

    async def journal_started(self, session_id: str, run_id: str, call_id: str, token: int) -> None:
        await self._fence(session_id, token)
        self._journals.setdefault((session_id, run_id), {})[call_id] = JournalEntry(call_id)

    async def journal_finished(
        self,
        session_id: str,
        run_id: str,
        call_id: str,
        content: str,
        is_error: bool,
        token: int,
    ) -> None:
        await self._fence(session_id, token)
        self._journals.setdefault((session_id, run_id), {})[call_id] = JournalEntry(
            call_id, finished=True, content=content, is_error=is_error
        )


__all__ = [
    "CLOSED_TTL",
    "Fence",
    "MemorySuspensions",
    "Suspensions",
    "closed_approvals",
    "decide_closed",
    "keeping_decisions",
    "resumable_at",
]
