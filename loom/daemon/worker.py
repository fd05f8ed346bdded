"""Session workers: at most one run per session across every worker process.

A worker takes a session's lease (with a fencing token) before running it, renews the lease
while the run goes on, and runs the session again as long as signals are waiting. Signals a
run takes move to the session's in-flight list and leave it only when the run has ended, so
a worker that dies loses nothing: its lease expires and another worker's sweep takes the
session, in-flight signals included.

A run ends in one place, ``_end_run``: its transcript, its record, the replies it owes, the
release of its signals and its feedback are stored in one fenced step keyed by the run id
(``State.finish_and_continue``), which also takes the next run's signals or lets the lease
go, retried through an outage of the state for as long as the lease is held; the replies
then go from the session's outbox to the broker. A retry or a kill at any point neither
loses the answer nor runs or replies twice (``loom.state.endings``).

On Redis a run costs three round trips to the state: the lease with the first run's
signals (``State.open_session``), the history read, and the ending with the next take.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from loom import logs, metrics, tracing
from loom.agent import Agent
from loom.broker.base import Broker, Delivery
from loom.core.checkpoints import RunCheckpoint
from loom.core.context import StoredContext
from loom.core.session_store import RUN_TRANSCRIPT, SessionSnapshot, SessionStore
from loom.daemon.awaiting import AwaitingRuns, FencedJournal, can_resume
from loom.daemon.poison import PoisonGuard
from loom.daemon.replies import publish_reply, replies_for
from loom.daemon.run_input import render_run_input
from loom.daemon.settings import ApprovalSettings
from loom.delivery import OUTAGES, backoff, count_dead_letters
from loom.intake.replies import Reply
from loom.runtime.config import RunContext, SessionConfig
from loom.runtime.run import Run, RunResult, RunStatus
from loom.runtime.session import Session
from loom.signals import RuntimeSignal
from loom.state.base import State, StateUnavailable
from loom.state.endings import RunEnding, RunFinish, RunTake, SessionOpening, Then
from loom.state.feedback_log import held_feedback
from loom.state.leases import Lease, Leases, StaleFencingToken, replica_id
from loom.wire import WORK_QUEUE, PendingSignal, parse_work, publish_work

logger = logging.getLogger("loom.worker")

PAUSED = "paused_for_approval"
"""Metadata of a run that paused for approvals: its ending also forgets its checkpoint."""

HANDBACK_SHARE = 0.2
HANDBACK_LEAST = 0.5
HANDBACK_MOST = 2.0
"""The part of ``stop``'s timeout kept for cancelling unfinished runs and handing them back:
a share of it, at least ``HANDBACK_LEAST`` s and at most ``HANDBACK_MOST`` s (never more
than the whole timeout)."""

ENDING_RETRY_FIRST = 0.2
ENDING_RETRY_MOST = 5.0
"""Pauses (doubling) between attempts to store a run's ending while the state is away."""

MAX_CARRIES = 3
"""An interrupted run hands its signals on this many times; then they are answered with
the interrupted run's outcome, so a storm of interrupts cannot keep a signal forever."""


class FencedSessionStore(SessionStore):
    """Writes of one leased worker: refused once a newer lease of the session exists."""

    def __init__(self, inner: SessionStore, state: Leases, lease: Lease) -> None:
        super().__init__(max_messages=inner.max_messages, max_runs=inner.max_runs)
        self.inner = inner
        self.state = state
        self.lease = lease

    async def load(self, session_id: str) -> SessionSnapshot | None:
        return await self.inner.load(session_id)

    async def load_history(self, session_id: str) -> SessionSnapshot | None:
        return await self.inner.load_history(session_id)

    async def append(self, session_id: str, **changes: Any) -> None:
        await self.state.check_fence(session_id, self.lease.token)
        await self.inner.append(session_id, **changes)

    async def load_context(self, session_id: str) -> StoredContext | None:
        return await self.inner.load_context(session_id)

    async def save_context(self, session_id: str, context: StoredContext) -> None:
        await self.state.check_fence(session_id, self.lease.token)
        await self.inner.save_context(session_id, context)

    async def delete(self, session_id: str) -> None:
        await self.inner.delete(session_id)

    async def list_sessions(self) -> list[str]:
        return await self.inner.list_sessions()


class LeasedSessionStore(FencedSessionStore):
    """The session store a leased run writes through. The run's own write (its messages,
    record and metadata) is held back in ``ending`` for the worker to store with the rest of
    the run's ending; any other write is fenced by the lease."""

    def __init__(self, inner: SessionStore, state: Leases, lease: Lease) -> None:
        super().__init__(inner, state, lease)
        self.ending: RunEnding | None = None
        self._entries: int | None = None  # messages ever stored in the session, as loaded

    async def load_history(self, session_id: str) -> SessionSnapshot | None:
        snapshot = await super().load_history(session_id)
        self._entries = 0 if snapshot is None else snapshot.first_entry + len(snapshot.messages)
        return snapshot

    async def append(self, session_id: str, **changes: Any) -> None:
        run = changes.get("run")
        if run is not None:
            messages, metadata = tuple(changes.get("messages", ())), changes.get("metadata")
            if self._entries is None:  # a run resumed from its checkpoint loaded no history
                await self.load_history(session_id)
            assert self._entries is not None
            # Where the run's messages land in the session's transcript (entry numbers
            # counted from its first message ever): the lease keeps anyone else from
            # appending meanwhile, so what was loaded is where they start.
            placed = {"from": self._entries, "count": len(messages)}
            run = dataclasses.replace(run, metadata={**run.metadata, RUN_TRANSCRIPT: placed})
            self.ending = RunEnding(session_id, run, messages, dict(metadata or {}))
            return
        await super().append(session_id, **changes)


class SessionWorker:
    """Consumes work notices and sweeps for sessions with work; runs them under leases."""

    def __init__(
        self,
        agent: Agent,
        broker: Broker,
        state: State,
        *,
        concurrency: int = 8,
        lease_ttl: float = 15.0,
        sweep_interval: float = 2.0,
        prefetch: int = 32,
        interrupt_poll: float = 0.1,
        owner: str | None = None,
        max_attempts: int = 5,
        approvals: ApprovalSettings | None = None,
    ) -> None:
        self.agent = agent
        # Runs are stored with the rest of their ending by the state (``finish_run``), in
        # its session store: the agent reads its histories there too (the Daemon does so).
        agent.session_store = state.sessions
        self.broker = broker
        self.state = state
        self.poison = PoisonGuard(broker, state, max_attempts=max_attempts)
        self.awaiting = AwaitingRuns(state.suspensions, broker, approvals or ApprovalSettings())
        self.owner = owner or replica_id()
        self.lease_ttl = lease_ttl
        self.sweep_interval = sweep_interval
        self.prefetch = prefetch
        self._slots = asyncio.Semaphore(concurrency)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._runs: dict[str, Run] = {}
        self._retries: set[asyncio.Task[Any]] = set()
        self._wakes: dict[str, asyncio.Task[None]] = {}
        self._handled: dict[str, set[str]] = {}
        self._lost: set[str] = set()
        self._poller: asyncio.Task[None] | None = None
        self.interrupt_poll = interrupt_poll
        self._tag: str | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def consuming(self) -> bool:
        return self._tag is not None

    @property
    def active_sessions(self) -> list[str]:
        return list(self._active)

    async def start(self) -> None:
        self._stopping = False
        handler = count_dead_letters(backoff(self.handle))
        self._tag = await self.broker.consume(WORK_QUEUE, handler, prefetch=self.prefetch)
        metrics.CONSUMERS.labels(WORK_QUEUE).inc()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="loom-worker-sweep")
        self._poller = asyncio.create_task(self._poll_interrupts(), name="loom-interrupts")

    async def stop(self, timeout: float) -> None:
        """Stop taking work; let runs finish, then cancel them, all within ``timeout``
        seconds: the last part of it (``HANDBACK_SHARE``) is kept for cancelling and handing
        back, so the drain does not overshoot.

        A cancelled run's signals stay in flight, its lease is released and a work notice
        is published for it, so another worker takes the session over at once (and KEDA,
        scaling on the work queue, starts one if none is left).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._stopping = True
        for run in list(self._runs.values()):
            run.suspend()  # a run waiting for people goes on elsewhere, not after a timeout
        if self._tag is not None:
            tag, self._tag = self._tag, None
            metrics.CONSUMERS.labels(WORK_QUEUE).dec()
            # Notices still waiting for a slot go back to the queue at once; the sessions
            # they name stay marked ready for whichever worker comes next.
            await self.broker.cancel(tag, timeout=0)
        for background in (self._sweeper, self._poller):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        tasks = list(self._active.values())
        if tasks:
            share = max(timeout * HANDBACK_SHARE, HANDBACK_LEAST)
            handback = min(share, HANDBACK_MOST, timeout)
            _, unfinished = await asyncio.wait(tasks, timeout=max(timeout - handback, 0.0))
            for task in unfinished:
                task.cancel()
            if unfinished:
                logger.warning("handing back %d unfinished session(s)", len(unfinished))
                await asyncio.wait(unfinished, timeout=max(deadline - loop.time(), 0.0))
        # Notices held back after failures go now: this worker's sweep will not run again.
        waiting = list(self._wakes.items())
        for _, task in waiting:
            task.cancel()
        await asyncio.gather(*(task for _, task in waiting), return_exceptions=True)
        for session_id, _ in waiting:
            await self._wake(session_id)

    async def handle(self, delivery: Delivery) -> None:
        try:
            session_id = parse_work(delivery.body)
        except (ValueError, TypeError) as error:
            await delivery.dead_letter(f"invalid work notice: {error}")
            return
        if not await self.try_run(session_id) and self._stopping:
            # Back to the queue for another worker: the state notes this notice as out
            # (``record_signals``), so the session's next signals would send none.
            await delivery.retry()
            return
        await delivery.ack()

    async def run_until_idle(self, timeout: float | None = None) -> None:
        """Burst mode for tests: run every ready session until none has work left."""
        async with asyncio.timeout(timeout):
            while True:
                await self.state.promote_due()
                for session_id in await self.state.ready_sessions():
                    await self.try_run(session_id)
                if self._active:
                    await asyncio.wait(list(self._active.values()))
                    continue
                if not await self.state.ready_sessions():
                    return

    async def try_run(self, session_id: str) -> bool:
        """Run the session here if no run of it is going on anywhere; False if not taken."""
        if self._stopping or session_id in self._active:
            return False
        await self._slots.acquire()
        try:
            opening = await self.state.open_session(session_id, self.owner, self.lease_ttl)
        except BaseException:
            self._slots.release()
            raise
        if opening is None or opening.released:
            self._slots.release()
            if opening is not None and opening.work_left:
                self._background(self.try_run(session_id))  # signals came meanwhile
            return False
        task = asyncio.create_task(self._drive(opening), name=f"loom-session-{session_id}")
        self._active[session_id] = task
        metrics.ACTIVE_SESSIONS.inc()
        return True

    async def _drive(self, opening: SessionOpening) -> None:
        lease = opening.lease
        session_id = lease.session_id
        logs.bind(session_id=session_id, signal_id=None, run_id=None)  # this task's records
        renewer = asyncio.create_task(self._renew(lease), name=f"loom-lease-{session_id}")
        released = False
        again = False
        handed_back = failed = False
        waiting = False  # a run of the session is suspended, waiting for people
        try:
            # Replies of a run stored by a worker that died before they left go first.
            await self._send_unsent(session_id, opening.unsent)
            # Signals a run that died (or was handed back) left in flight: their wait was
            # recorded when that run took them. The opening took them with the pending
            # ones (observed signals alone, or put off, start no run; left ones always do).
            left = set(opening.left)
            take: RunTake | None = opening.take
            if opening.suspended:
                checkpoint = await self.state.suspensions.load(session_id)
                if checkpoint is not None:
                    waiting = not await self._go_on_with(lease, checkpoint)
                left = set()  # the suspended run's signals: answered, or still waiting
            recovering = bool(left)
            if left:
                metrics.LEASE_TAKEOVERS.inc()
            while not self._stopping and not waiting:
                if take is None:
                    if session_id in self._lost:
                        raise StaleFencingToken(f"lease of session {session_id} was lost")
                    take = await self.state.take_run(lease)  # fenced
                    if take is None:
                        break
                # This run takes every pending signal, put-off ones folded in. The ready
                # mark stays until the session is let go of: should this worker die, a
                # sweep finds the signals it left in flight.
                taken, risks, take = take.signals, take.risks, None
                if not taken:
                    break
                signals = [PendingSignal.from_json(t) for t in taken]
                fresh = [p for t, p in zip(taken, signals, strict=True) if t not in left]
                left = set()
                result, ending = await self._run_once(lease, signals, fresh, risks)
                if result.status is RunStatus.AWAITING_APPROVAL:
                    waiting = True  # suspended: its signals stay in flight until it ends
                    break
                interrupted = result.status is RunStatus.INTERRUPTED
                if (
                    interrupted
                    and not result.metadata.get(PAUSED)
                    and await self._carry_over(lease, signals)
                ):
                    # The next run takes them, with what interrupted this one; this one's
                    # transcript is kept, answering nobody yet.
                    if ending is not None:
                        await self._store_ending(lease, ending, "keep")
                    continue
                # The ending takes the next run's signals too, or lets the session go.
                then: Then = "release" if self._stopping else "take"
                finish = await self._finish(lease, result, signals, ending, then)
                if recovering:  # signals an earlier attempt left went through this time
                    recovering = False
                    await self.poison.recovered(session_id)
                if finish.released:
                    released, again = True, finish.work_left
                    break
                take = finish.take
            if not released:  # else let go of with the run's ending (``again``: work left)
                # Signals taken for a run that did not start (stopping) stay in flight.
                untreated = take is not None and bool(take.signals)
                released, again = await self._let_go(lease, waiting, untreated)
        except StaleFencingToken:
            # The new holder owns the in-flight signals now: touch nothing.
            logger.warning("session %s: lease lost to a newer holder; stopping", session_id)
        except asyncio.CancelledError:
            logger.warning(
                "session %s: run cancelled (shutdown); signals stay in flight", session_id
            )
            handed_back = True
            await self._mark_ready(session_id)
        except OUTAGES as problem:  # waited out, not counted (``_count_failure``)
            logger.warning("session %s: %s; signals stay in flight", session_id, problem)
            failed = True
            await self._count_failure(lease, problem)
            await self._mark_ready(session_id)
        except Exception as problem:
            logger.exception("session %s: worker failed; signals stay in flight", session_id)
            failed = True
            await self._count_failure(lease, problem)
            await self._mark_ready(session_id)
        finally:
            renewer.cancel()
            self._lost.discard(session_id)
            if not released:
                with contextlib.suppress(Exception):
                    await self.state.release_lease(lease)
            self._active.pop(session_id, None)
            metrics.ACTIVE_SESSIONS.dec()
            self._slots.release()
            if not again:  # the lease is let go of: so are the session's own MCP servers
                self._background(self.agent.release_session(session_id))
        if handed_back or ((failed or again) and self._stopping):
            await self._wake(session_id)
        elif failed:
            self._wake_soon(session_id)
        elif again:  # take it straight back rather than wait for the next sweep
            self._background(self.try_run(session_id))

    async def _let_go(self, lease: Lease, waiting: bool, untreated: bool) -> tuple[bool, bool]:
        """Let go of a session the loop left with its lease held (nothing more to take, a
        run waiting for people, or stopping; ``untreated``: signals were taken in flight
        for a run that did not start): (released, take it again)."""
        session_id = lease.session_id
        if untreated:
            return await self.state.release_lease(lease), True
        await self.state.clear_ready(session_id)
        released = await self.state.release_lease(lease)
        # A signal recorded after the last take and before the release found the lease
        # held and left the session to us: look once more now that it is free. Also when
        # stopping: then the loop above left such signals for another worker to find.
        # Not while a run waits for people: new signals wait for it to end; but a
        # decision, or a signal that interrupts the run, that came after the last look
        # (recorded while we held the session, so with no notice) must not wait for a
        # sweep: no sweep looks at a suspended session's signals.
        if waiting:
            checkpoint = await self.state.suspensions.load(session_id)
            if checkpoint is None:
                return released, False
            if can_resume(checkpoint) or await self._interrupting(session_id) is not None:
                await self.state.mark_ready(session_id)
                return released, True
            return released, False
        if await self.state.has_work(session_id):
            await self.state.mark_ready(session_id)
            return released, True
        return released, False

    async def _end_run(
        self,
        lease: Lease,
        result: RunResult,
        signals: Sequence[PendingSignal],
        ending: RunEnding | None,
        then: Then,
    ) -> RunFinish:
        """End a run: store it with the replies it owes and the release of its signals in
        one fenced step (with what comes next, ``then``), then send the replies. A run that
        left nothing to store (it never started, or was stopped) keeps its signals in
        flight for the next attempt."""
        if ending is None:
            await self._hold(lease)  # stopped because the lease was lost: not a failure
            raise RuntimeError(f"run {result.run_id} did not start: {result.error}")
        replies = [reply.to_json().decode() for reply in replies_for(result, signals)]
        finish = await self._store_ending(lease, dataclasses.replace(ending, replies=replies), then)
        if not finish.stored:  # stored by an earlier attempt: its replies may be waiting
            await self._send_replies(lease.session_id)
        elif replies:
            await self._send_unsent(lease.session_id, {ending.run_id: replies})
        return finish

    async def _store_ending(self, lease: Lease, ending: RunEnding, then: Then) -> RunFinish:
        """``finish_and_continue``, retried while the state is away and the lease is held.
        Keyed by the run id: an attempt that timed out but landed makes the next one store
        nothing (and find the lease let go of if that attempt let it go)."""
        pause = ENDING_RETRY_FIRST
        while True:
            if lease.session_id in self._lost:
                raise StaleFencingToken(f"lease of session {lease.session_id} was lost")
            try:
                return await self.state.finish_and_continue(lease, ending, then)
            except StateUnavailable as outage:
                logger.warning(
                    "session %s: storing run %s failed (%s); retrying in %.1fs",
                    lease.session_id, ending.run_id, outage, pause,
                )  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(pause * 2, ENDING_RETRY_MOST)

    async def _send_replies(self, session_id: str) -> None:
        """Publish the replies waiting in the session's outbox (confirmed), then drop them.
        Their message ids derive from the run, so the dispatcher sends a copy only once."""
        await self._send_unsent(session_id, await self.state.unsent_replies(session_id))

    async def _send_unsent(self, session_id: str, unsent: dict[str, list[str]]) -> None:
        """Publish these replies of the session's outbox, by run id, then drop them."""
        for run_id, replies in unsent.items():
            for text in replies:
                await publish_reply(self.broker, Reply.from_json(text.encode()))
            await self.state.replies_sent(session_id, run_id)

    async def _finish(
        self,
        lease: Lease,
        result: RunResult,
        signals: Sequence[PendingSignal],
        ending: RunEnding | None,
        then: Then = "keep",
    ) -> RunFinish:
        """A run ended: store its ending (which lets go of its signals), then forget its
        checkpoint if it had one. In that order: while the checkpoint remains, a takeover
        finds the run's stored end (``_recorded``) instead of resuming it again; so a run
        that had a checkpoint keeps the lease past its ending."""
        paused = bool(result.metadata.get(PAUSED))
        finish = await self._end_run(lease, result, signals, ending, "keep" if paused else then)
        if paused:
            await self.awaiting.ended(lease, result.run_id)
        return finish

    async def _carry_over(self, lease: Lease, signals: Sequence[PendingSignal]) -> bool:
        """An interrupted run's signals were not treated: hand them to the next run, marked
        as carried over, instead of letting them go (and answer none of them yet). False
        when they were carried too often already: the caller concludes them."""
        if any(p.carried >= MAX_CARRIES for p in signals):
            return False
        await self._hold(lease)
        carried = [p.carried_over() for p in signals]
        ready = any(p.action.wakes_a_worker for p in carried)
        await self.state.carry_over(lease.session_id, [p.to_json() for p in carried], ready)
        metrics.ATTENTION_CARRIED_OVER.inc(len(carried))
        return True

    async def _interrupting(self, session_id: str) -> RuntimeSignal | None:
        """The first pending signal that interrupts the session's run, if any."""
        for pending in map(PendingSignal.from_json, await self.state.pending(session_id)):
            if pending.action.interrupts:
                return pending.signal
        return None

    async def _go_on_with(self, lease: Lease, checkpoint: RunCheckpoint) -> bool:
        """The session has a suspended run: resume it when its decisions are in (or one
        expired), or end it when a signal interrupts it. False while it still waits."""
        session_id = lease.session_id
        signals = [PendingSignal.from_json(t) for t in await self.state.in_flight(session_id)]
        if await self._recorded(session_id, checkpoint.run_id):
            # A worker died after storing the run's end (its replies went from the outbox
            # at the start of this drive): only the checkpoint is left to forget.
            await self.awaiting.ended(lease, checkpoint.run_id)
            return True
        interrupting = await self._interrupting(session_id)
        if not can_resume(checkpoint) and interrupting is None:
            # Still waiting. Ask again: a worker may have died between keeping the run and
            # asking (each request is delivered once, so this repeats none).
            await self.awaiting.ask_again(checkpoint, signals)
            return False
        store = LeasedSessionStore(self.state.sessions, self.state, lease)
        session = Session(self.agent, SessionConfig(id=session_id), store=store)
        here = {"fencing_token": lease.token, "worker": self.owner}
        checkpoint = dataclasses.replace(checkpoint, metadata={**checkpoint.metadata, **here})
        with held_feedback(session_id) as feedback:
            run = session.resume(checkpoint, journal=FencedJournal(self.state.suspensions, lease))
        if interrupting is not None and not can_resume(checkpoint):
            run.interrupt(f"interrupted by signal {interrupting.id} while waiting for approval")
        logs.bind(run_id=run.id)
        result = await self._watch(lease, run, signals)
        _log_outcome(session_id, result, len(signals))
        ending = await self._with_feedback(session_id, store.ending, feedback)
        if result.status is RunStatus.AWAITING_APPROVAL:
            return False  # it asked again, and waits again
        await self._finish(lease, result, signals, ending)
        await self.poison.recovered(session_id)
        return True

    async def _recorded(self, session_id: str, run_id: str) -> bool:
        """Whether the run's end is stored (a suspended run that already ended)."""
        snapshot = await self.state.sessions.load(session_id)
        return snapshot is not None and any(r.run_id == run_id for r in snapshot.runs)

    async def _count_failure(self, lease: Lease, problem: Exception) -> None:
        """Count the failure; at the limit the signals in flight go to the dead letters."""
        try:
            if await self.poison.failed(lease, problem):
                # Its signals were given up (and answered as failed): a run suspended for
                # them must not go on later.
                checkpoint = await self.state.suspensions.load(lease.session_id)
                if checkpoint is not None:
                    await self.awaiting.ended(lease, checkpoint.run_id)
        except Exception as counting:  # the signals stay in flight: nothing is lost
            logger.warning("session %s: failure not counted: %s", lease.session_id, counting)

    async def _mark_ready(self, session_id: str) -> None:
        """Mark a handed-back session ready (before its lease goes), best effort: a work
        notice (``_wake``) is enough to resume the signals it left in flight."""
        try:
            await self.state.mark_ready(session_id)
        except Exception as problem:
            logger.warning("session %s: not marked ready: %s", session_id, problem)

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` without holding the session's slot; kept until it is done."""
        task = asyncio.create_task(work)
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    def _wake_soon(self, session_id: str) -> None:
        """``_wake`` after a sweep interval: a session that fails again and again is retried
        at the sweep's pace, not in a tight loop. ``stop()`` sends waiting notices at once."""
        if session_id in self._wakes:
            return

        async def later() -> None:
            await asyncio.sleep(self.sweep_interval)
            await self._wake(session_id)

        task = asyncio.create_task(later(), name=f"loom-wake-{session_id}")
        self._wakes[session_id] = task
        task.add_done_callback(lambda _: self._wakes.pop(session_id, None))

    async def _wake(self, session_id: str) -> None:
        """Publish a work notice for a session left to the next worker, best effort.

        The notice is what wakes a worker when none is consuming (KEDA scales on the work
        queue and may have scaled the workers to zero); a sweep only runs where a worker
        does. It is sent once the session is off this worker's books, so a notice this
        worker takes is not dropped as a run already under way. A failed publish is
        logged: a worker's sweep still finds the session marked ready.
        """
        try:
            await publish_work(self.broker, session_id)
        except Exception as problem:
            logger.warning(
                "session %s: work notice not published (%s); a worker's sweep will find it",
                session_id, problem,
            )  # fmt: skip

    async def _run_once(
        self,
        lease: Lease,
        signals: list[PendingSignal],
        fresh: list[PendingSignal],
        risks: dict[str, str],
    ) -> tuple[RunResult, RunEnding | None]:
        # The run joins the trace of the first signal it was asked to handle, and links the
        # others: one run answers several signals.
        asking = [p for p in signals if p.action.wakes_a_worker] or signals
        traces = [p.trace for p in asking if p.trace]
        ids = ",".join(p.signal.id for p in asking)
        attributes = {"loom.session_id": lease.session_id, "loom.signals": len(signals)}
        with (
            logs.log_context(signal_id=ids, run_id=None),
            tracing.span(
                "loom.worker.run",
                kind="consumer",
                parent=traces[0] if traces else None,
                links=traces[1:],
                attributes=attributes,
            ) as span,
        ):
            result, ending = await self._run_signals(lease, signals, fresh, risks)
            span.set_attribute("loom.run_id", result.run_id)
            span.set_attribute("loom.status", result.status.value)
            return result, ending

    async def _run_signals(
        self,
        lease: Lease,
        signals: list[PendingSignal],
        fresh: list[PendingSignal],
        risks: dict[str, str],
    ) -> tuple[RunResult, RunEnding | None]:
        """Run the session on ``signals`` (taken with the active ``risks``, the take fenced
        and noted as a run's start); ``fresh`` are those taken for the first time. Returns
        the result and what the run left to store (None if it stored nothing)."""
        session_id = lease.session_id
        store = LeasedSessionStore(self.state.sessions, self.state, lease)
        # A fresh Session each time: another worker may have run it since, so the history
        # is loaded from the shared store, never from this process's memory.
        session = Session(self.agent, SessionConfig(id=session_id), store=store)
        metadata = {
            "signals": [p.signal.id for p in signals],
            "fencing_token": lease.token,
            "worker": self.owner,
        }
        given = render_run_input(signals, risks)  # observed signals and risks: C_working
        context = RunContext(metadata=metadata, working=(given.digest,) if given.digest else ())
        # The run's feedback is stored with its ending (one step, not one write each).
        with held_feedback(session_id) as feedback:
            run = session.start(given.text, context=context)
        # Should the run pause for approvals, its calls from then on are journaled in the
        # state, so a worker that resumes it after a crash never runs one twice.
        run.journal = FencedJournal(self.state.suspensions, lease)
        logs.bind(run_id=run.id)  # until _run_once's log context ends
        now = datetime.now(UTC)
        for pending in fresh:
            # Observed signals wait for whatever run comes next by design: not a wait.
            if pending.action.wakes_a_worker:
                waited = (now - pending.signal.observed_at).total_seconds()
                metrics.SIGNAL_WAIT.observe(max(waited, 0))
        result = await self._watch(lease, run, signals)
        ending = await self._with_feedback(session_id, store.ending, feedback)
        if ending is None:  # the ending notes the run's end; with none, it is noted here
            await self.state.note_run(session_id, ended=True)
        _log_outcome(session_id, result, len(signals))
        return result, ending

    async def _with_feedback(
        self, session_id: str, ending: RunEnding | None, feedback: list[str]
    ) -> RunEnding | None:
        """The ending with the run's held feedback events; with no ending (the run never
        started, or was stopped), the events are written on their own."""
        if ending is not None:
            return dataclasses.replace(ending, feedback=tuple(feedback)) if feedback else ending
        for event in feedback:
            await self.state.add_feedback(session_id, event)
        return None

    async def _watch(self, lease: Lease, run: Run, signals: list[PendingSignal]) -> RunResult:
        """Follow the run to its end or its suspension; interrupts and a lost lease reach
        it meanwhile."""
        session_id = lease.session_id
        self._runs[session_id] = run
        self._handled[session_id] = {p.signal.id for p in signals}
        try:
            result = await self.awaiting.follow(lease, run, signals)
        except asyncio.CancelledError:
            # Shutdown: stop the run itself too, so it cannot write after handing back. A
            # run waiting for people is suspended instead: its checkpoint is in the state.
            if not run.suspend():
                run.cancel("the worker is shutting down; the session is handed back")
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(run.wait(), 5)
            raise
        except Exception:
            # Keeping or asking for a paused run failed (the state or the broker is down):
            # the run must not wait on in this process, where nobody can decide for it. Its
            # signals stay in flight for the next attempt.
            run.cancel("the worker could not keep the run waiting for approval")
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(run.wait(), 5)
            raise
        finally:
            self._runs.pop(session_id, None)
            self._handled.pop(session_id, None)
        if run.checkpointed:
            result.metadata[PAUSED] = True
        if result.status is RunStatus.INTERRUPTED and run.interrupted_at is not None:
            metrics.ATTENTION_INTERRUPT_SECONDS.observe(time.monotonic() - run.interrupted_at)
        return result

    async def _poll_interrupts(self) -> None:
        """One poller for every run of this worker: a request for a signal the run does not
        hold interrupts it (at its next step boundary)."""
        while True:
            await asyncio.sleep(self.interrupt_poll)
            for session_id, run in list(self._runs.items()):
                try:
                    while request := await self.state.wait_interrupt(session_id, 0):
                        signal_id, reason = request
                        if signal_id in self._handled.get(session_id, ()):
                            continue  # this run already has that signal
                        if run.interrupt(f"interrupted by signal {signal_id}: {reason}"):
                            metrics.INTERRUPTS.inc()
                        break
                except Exception:
                    logger.exception("polling interrupts of session %s failed", session_id)

    async def _hold(self, lease: Lease) -> None:
        """Raise StaleFencingToken unless this worker still holds the session."""
        if lease.session_id in self._lost:
            raise StaleFencingToken(f"lease of session {lease.session_id} was lost")
        await self.state.check_fence(lease.session_id, lease.token)

    async def _renew(self, lease: Lease) -> None:
        """Renew every third of the TTL. A renewal that fails (Redis unreachable) is tried
        again; only when the lease may have expired is it given up and the run stopped."""
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        interval = self.lease_ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self.state.renew_lease(lease, self.lease_ttl)
            except Exception as problem:
                logger.warning(
                    "session %s: renewing the lease failed: %s", lease.session_id, problem
                )
                held = loop.time() - renewed_at < self.lease_ttl * 0.9
                interval = min(self.lease_ttl / 10, 1.0)
            else:
                renewed_at = loop.time()
                interval = self.lease_ttl / 3
            if not held:
                logger.warning("session %s: lease lost; stopping its run", lease.session_id)
                self._lost.add(lease.session_id)
                run = self._runs.get(lease.session_id)
                if run is not None:
                    run.cancel("the session lease was lost")
                return

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                now = datetime.now(UTC)
                # Runs put off (debounce, minimum interval) that are due: durable in the
                # state, so one survives the death of whichever process put it off.
                await self.state.promote_due()
                ready = await self.state.ready_sessions()
                # Suspended runs whose decisions are in (even if their signal was lost) or
                # whose approvals expired.
                ready += await self.state.suspensions.resumable(now)
                for session_id in dict.fromkeys(ready):
                    if self._stopping:
                        return
                    if session_id not in self._active and not self._slots.locked():
                        await self.try_run(session_id)
            except Exception:
                logger.exception("worker sweep failed; trying again")


def _log_outcome(session_id: str, result: RunResult, signals: int) -> None:
    """A failed run at WARNING with its reason (a missing key, a provider refusing): the
    operator reading the log learns why without asking the API. Interrupted and cancelled
    runs are part of the flow (a newer signal, a shutdown): INFO, with the reason too. The
    reason goes through the log handler's redactor like every record."""
    what = f"session {session_id} run {result.run_id} {result.status.value} ({signals} signal(s))"
    if result.status is RunStatus.AWAITING_APPROVAL:
        return  # not an outcome: the run is suspended (logged by loom.daemon.awaiting)
    if result.ok:
        logger.info("%s", what)
    elif result.status is RunStatus.FAILED:
        logger.warning("%s: %s", what, result.error)
    else:
        logger.info("%s: %s", what, result.error)


__all__ = ["FencedSessionStore", "LeasedSessionStore", "SessionWorker", "render_run_input"]
