"""Runs that wait for people, in a worker: made durable, asked for, held, suspended, resumed.

When a run pauses for approvals, its checkpoint is written to the state under the
session's fencing token before anyone is asked (so a decision can be taken at any replica
and any worker can go on with the run); the requests go out on the reply path (a Slack
message with buttons, a signed callback). The worker then holds the run for a short while
(``LOOM_APPROVALS__HOLD``), looking for decisions in the state: one that comes in time
resumes the run at once. Past the hold the run is suspended: it ends in this process, its
signals stay in flight, and the worker's slot and the session's lease are freed. A worker
that later takes the session (woken by the ``approval`` signal, or finding it in its sweep)
resumes the run from the checkpoint, its tool calls journaled under its own token so none
runs twice. A run tree (a sub-agent waiting for approval) is kept and suspended the same
way: the top run's checkpoint holds its children's (``RunCheckpoint.children``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from loom import metrics
from loom.broker.base import Broker
from loom.core.checkpoints import JournalEntry, RunCheckpoint
from loom.daemon.replies import publish_reply, replies_for
from loom.daemon.settings import ApprovalSettings
from loom.runtime.run import Run, RunResult, RunStatus
from loom.state.leases import Lease
from loom.state.suspensions import Suspensions
from loom.wire import PendingSignal

logger = logging.getLogger("loom.worker")


class FencedJournal:
    """A suspended run's tool-call journal, written under the resuming worker's lease."""

    def __init__(self, suspensions: Suspensions, lease: Lease) -> None:
        self.suspensions = suspensions
        self.lease = lease

    async def entries(self, run_id: str) -> dict[str, JournalEntry]:
        return await self.suspensions.journal(self.lease.session_id, run_id)

    async def started(self, run_id: str, call_id: str) -> None:
        await self.suspensions.journal_started(
            self.lease.session_id, run_id, call_id, self.lease.token
        )

    async def finished(self, run_id: str, call_id: str, content: str, is_error: bool) -> None:
        await self.suspensions.journal_finished(
            self.lease.session_id, run_id, call_id, content, is_error, self.lease.token
        )

    async def turn(self, checkpoint: RunCheckpoint) -> None:
        await self.suspensions.save(checkpoint, self.lease.token)


def can_resume(checkpoint: RunCheckpoint, now: datetime | None = None) -> bool:
    """Every approval decided, or one expired (it will be denied as such)."""
    now = now or datetime.now(UTC)
    pending = checkpoint.pending
    return not pending or any(a.expired(now) for a in pending)


class AwaitingRuns:
    """What a worker does with a run that pauses for approvals (see the module)."""

    def __init__(
        self, suspensions: Suspensions, broker: Broker, settings: ApprovalSettings
    ) -> None:
        self.suspensions = suspensions
        self.broker = broker
        self.settings = settings

    async def follow(self, lease: Lease, run: Run, signals: Sequence[PendingSignal]) -> RunResult:
        """Wait for ``run`` through its pauses; its final result, or its suspension's."""
        while True:
            result = await run.wait()
            if result.status is RunStatus.AWAITING_APPROVAL and run.done():
                await self._suspended(lease, result, signals)
                return result
            if result.status is not RunStatus.AWAITING_APPROVAL or run.done():
                return result
            await self._ask(lease, result, signals)
            if not await self._hold(lease.session_id, run):
                run.suspend()
                logger.info(
                    "session %s: run %s suspended, waiting for %d approval(s)",
                    lease.session_id, run.id, len(run.approvals),
                )  # fmt: skip

    async def _ask(self, lease: Lease, result: RunResult, signals: Sequence[PendingSignal]) -> None:
        """Make the paused run durable, then ask people (in that order: a decision on a
        request must find the run in the state)."""
        assert result.checkpoint is not None
        await self.suspensions.save(result.checkpoint, lease.token)
        await self.count()
        await self._request(result, signals)

    async def _suspended(
        self, lease: Lease, result: RunResult, signals: Sequence[PendingSignal]
    ) -> None:
        """A run tree ended suspended: its checkpoint now holds what its children did
        after the pause (siblings' results, other children suspended meanwhile), so it is
        written again (decisions taken since are kept), and any new approval is asked."""
        checkpoint = result.checkpoint
        if checkpoint is None or not checkpoint.children:
            return  # a run alone: the checkpoint written at its pause is the whole of it
        await self.suspensions.save(checkpoint, lease.token)
        await self.ask_again(checkpoint, signals)

    async def ask_again(self, checkpoint: RunCheckpoint, signals: Sequence[PendingSignal]) -> None:
        """Send the suspended run's requests again (a reply is delivered once by its key:
        a request already delivered is not repeated)."""
        pending = checkpoint.pending
        if not pending:
            return
        result = RunResult(
            checkpoint.run_id,
            checkpoint.session_id,
            RunStatus.AWAITING_APPROVAL,
            output=checkpoint.output,
            approvals=pending,
        )
        await self._request(result, signals)

    async def _request(self, result: RunResult, signals: Sequence[PendingSignal]) -> None:
        extra = {"approvals": [a.to_dict() for a in result.approvals]}
        for reply in replies_for(result, signals):
            await publish_reply(self.broker, dataclasses.replace(reply, extra=extra))

    async def _hold(self, session_id: str, run: Run) -> bool:
        """Keep the paused run for ``hold`` seconds, taking the decisions found in the
        state; True once it goes on (decided, or stopped by an interrupt or a cancel)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.settings.hold
        while loop.time() < until:
            await asyncio.sleep(min(self.settings.poll, max(until - loop.time(), 0.0)))
            if run.suspending:  # the worker is stopping: the run goes on elsewhere
                return False
            if run.status is not RunStatus.AWAITING_APPROVAL or not run.approvals:
                return True
            checkpoint = await self.suspensions.load(session_id)
            if checkpoint is None:
                continue
            for approval in checkpoint.approvals:
                run.record_decision(approval)
            if not run.approvals:
                return True
        return run.status is not RunStatus.AWAITING_APPROVAL or not run.approvals

    async def ended(self, lease: Lease, run_id: str) -> None:
        """The run ended: forget its checkpoint and journal."""
        await self.suspensions.discard(lease.session_id, run_id, lease.token)
        await self.count()

    async def count(self) -> None:
        """Show the number of suspended runs (read from the state, for every replica)."""
        try:
            metrics.SUSPENDED_RUNS.set(await self.suspensions.count())
        except Exception as problem:  # a gauge is not worth failing a run for
            logger.debug("counting suspended runs failed: %s", problem)


__all__ = ["AwaitingRuns", "FencedJournal", "can_resume"]
