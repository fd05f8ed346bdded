"""The daemon's shared state: ``State``, the union of the role-sized ports, plus lifecycle.

The ports, one module each, are what callers type against:

- ``Claims`` (``loom.state.claims``): dedupe claims and markers (gateway, replies, cron,
  Slack, heartbeat);
- ``WorkingState`` (``loom.state.working``): a session's pending and in-flight signals,
  risks, decisions, interrupts, and the ready set (attention role, workers);
- ``Leases`` (``loom.state.leases``): session leases and fencing tokens (workers, the stuck
  check);
- ``FeedbackLog`` (``loom.state.feedback_log``): feedback events (the feedback policy);
- ``RunEndings`` (``loom.state.endings``): a run's ending in one fenced step, and the
  outbox of the replies it owes (workers);
- ``SessionIndex`` (``loom.state.session_index``): sessions by last activity (the console).

``State`` adds connecting, the health check, the URL it was made from, and on the same
backend the kernel's session store (``state.sessions``: transcripts and run records) and
governance's rate-limit counters (``state.rate_limits``) and the runs waiting for people
(``state.suspensions``); ``state_from_url`` makes one.
Implementations: ``MemoryState`` (one process) and ``RedisState``. The port classes and
their values are also importable from here (the import path of old).
"""

from __future__ import annotations

from collections.abc import Sequence

from loom.core.governance import RateLimits
from loom.core.session_store import SessionStore
from loom.errors import LoomError
from loom.state.claims import Claims, Taken
from loom.state.endings import RunEnding, RunEndings, RunFinish, RunTake, SessionOpening, Then
from loom.state.feedback_log import DEFAULT_MAX_FEEDBACK, DEFAULT_MAX_SESSION_FEEDBACK, FeedbackLog
from loom.state.leases import HeldLease, Lease, Leases, StaleFencingToken, replica_id
from loom.state.session_index import SessionIndex
from loom.state.suspensions import Suspensions
from loom.state.working import (
    DEFAULT_MAX_DECISIONS,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_RISKS,
    RECORDED_TTL,
    DecisionContext,
    SignalRecord,
    WorkingState,
    asks_for_run,
    recorded_key,
)


class StateUnavailable(LoomError):
    """The state backend cannot be reached (the message names it, with no password)."""


class State(Claims, WorkingState, Leases, FeedbackLog, RunEndings, SessionIndex):
    """Every port on one backend (Redis, or the in-process memory state), with lifecycle."""

    url: str = ""
    sessions: SessionStore
    """Transcripts and run records, the kernel's session store on the same backend."""
    rate_limits: RateLimits
    """Governance's rate-limit counters on the same backend (shared by every replica on
    Redis)."""
    suspensions: Suspensions
    """Runs suspended while they wait for approvals: checkpoints, decisions, journals."""

    def __init__(
        self,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_decisions: int = DEFAULT_MAX_DECISIONS,
        max_risks: int = DEFAULT_MAX_RISKS,
        max_feedback: int = DEFAULT_MAX_FEEDBACK,
        max_session_feedback: int = DEFAULT_MAX_SESSION_FEEDBACK,
        recorded_ttl: float = RECORDED_TTL,
    ) -> None:
        if recorded_ttl <= 0:
            raise ValueError(f"recorded_ttl must be positive, got {recorded_ttl}")
        self.recorded_ttl = recorded_ttl
        self.max_pending = max_pending
        self.max_decisions = max_decisions
        self.max_risks = max_risks
        self.max_feedback = max_feedback
        self.max_session_feedback = max_session_feedback

    async def start(self) -> None:
        """Connect (idempotent)."""

    async def close(self) -> None:
        """Disconnect."""

    async def ping(self) -> bool:
        return True

    async def busy(self, session_id: str) -> bool:
        return await self.lease_holder(session_id) is not None

    # -- a leased run's steps, each one round trip on Redis ------------------------------
    # The worker's whole conversation with the state about a run: ``open_session`` (the
    # lease and the first run's signals), the session store's history read, and
    # ``finish_and_continue`` (the ending, and the next run's signals or the release).
    # Defaults here compose the ports; RedisState does each in one script.

    async def has_work(self, session_id: str) -> bool:
        """A pending signal asks for a run, and the run is not put off until later."""
        if not asks_for_run(await self.pending(session_id)):
            return False
        return not await self.scheduled(session_id)

    async def open_session(self, session_id: str, owner: str, ttl: float) -> SessionOpening | None:
        """Take the session's lease (None if held) and, in the same step, the first run's
        signals when there is work (signals left in flight always are), with the outbox and
        whether a run waits for people (then nothing is taken). With nothing to do at all,
        the ready mark is cleared and the lease let go of in the same step."""
        lease = await self.acquire_lease(session_id, owner, ttl)
        if lease is None:
            return None
        unsent = await self.unsent_replies(session_id)
        left = tuple(await self.in_flight(session_id))
        if await self.suspensions.load(session_id) is not None:
            return SessionOpening(lease, unsent, left, suspended=True, take=None)
        if left or await self.has_work(session_id):
            return SessionOpening(lease, unsent, left, False, await self._take(session_id))
        if unsent:
            return SessionOpening(lease, unsent, left, suspended=False, take=None)
        work_left = await self._let_go(lease, work=False)
        return SessionOpening(lease, {}, (), False, None, released=True, work_left=work_left)

    async def take_run(self, lease: Lease) -> RunTake | None:
        """The next run's signals, if any ask for a run and it is not put off; raises
        ``StaleFencingToken`` (taking nothing) if a newer lease exists."""
        await self.check_fence(lease.session_id, lease.token)
        if not await self.has_work(lease.session_id):
            return None
        return await self._take(lease.session_id)

    async def finish_and_continue(self, lease: Lease, ending: RunEnding, then: Then) -> RunFinish:
        """``finish_run``, and in the same step what comes next (``Then``): with "take",
        the next run's signals when some ask for a run, else the release; with "release",
        the release (the ready mark stays when work is left); with "keep", nothing."""
        stored = await self.finish_run(lease.token, ending)
        if then == "keep":
            return RunFinish(stored)
        if await self.lease_holder(lease.session_id) != lease:
            # Let go of by an earlier attempt of this very step (or expired): the session
            # goes to whichever worker takes it next.
            return RunFinish(stored, released=True, work_left=True)
        # Signals in flight here were taken by a first attempt of this step that landed (an
        # ending empties the list): whoever runs next must get them.
        work = bool(await self.in_flight(lease.session_id)) or await self.has_work(lease.session_id)
        if then == "take" and work:
            return RunFinish(stored, take=await self._take(lease.session_id))
        return RunFinish(stored, released=True, work_left=await self._let_go(lease, work=work))

    async def _take(self, session_id: str) -> RunTake:
        taken = await self.take_pending(session_id)
        await self.unschedule(session_id)
        await self.note_run(session_id, ended=False)  # for a minimum interval
        return RunTake(tuple(taken), await self.risks(session_id))

    async def _let_go(self, lease: Lease, *, work: bool) -> bool:
        """Release the lease, clearing the ready mark unless ``work`` is left; True when
        work is left. A signal recorded between the look and the release found the lease
        held and left the session to us: looked for once more, and marked ready."""
        if not work:
            await self.clear_ready(lease.session_id)
        await self.release_lease(lease)
        if not work and await self.has_work(lease.session_id):
            await self.mark_ready(lease.session_id)
            work = True
        return work

    async def record_signals(self, records: Sequence[SignalRecord]) -> set[str]:
        """Each record once per signal id (``recorded_key``, for ``recorded_ttl``): a
        redelivery after a crash, or after a write that timed out and landed anyway, does
        not keep the signal pending twice. Redis does this check in its one script. A ready
        record recorded before still asks for its notice: the first one may never have gone
        out (its publish failed, and the batch was delivered again)."""
        fresh: list[SignalRecord] = []
        again: set[str] = set()
        for record in records:
            key = recorded_key(record.signal_id) if record.signal_id else None
            if key is not None and await self.claim(key, "1", self.recorded_ttl) is not None:
                if record.ready:
                    again.add(record.session_id)
                continue
            fresh.append(record)
        return await super().record_signals(fresh) - again


__all__ = [
    "DEFAULT_MAX_DECISIONS",
    "DEFAULT_MAX_FEEDBACK",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_RISKS",
    "DEFAULT_MAX_SESSION_FEEDBACK",
    "Claims",
    "DecisionContext",
    "FeedbackLog",
    "HeldLease",
    "Lease",
    "Leases",
    "RunEnding",
    "RunEndings",
    "RunFinish",
    "RunTake",
    "SessionIndex",
    "SessionOpening",
    "SignalRecord",
    "StaleFencingToken",
    "State",
    "StateUnavailable",
    "Taken",
    "Then",
    "WorkingState",
    "replica_id",
]
