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
from loom.state.endings import RunEnding, RunEndings
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
    ) -> None:
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

    async def record_signals(self, records: Sequence[SignalRecord]) -> None:
        """Each record once per signal id (``recorded_key``, for ``RECORDED_TTL``): a
        redelivery after a crash, or after a write that timed out and landed anyway, does
        not keep the signal pending twice. Redis does this check in its one script."""
        fresh = [
            record
            for record in records
            if not record.signal_id
            or await self.claim(recorded_key(record.signal_id), "1", RECORDED_TTL) is None
        ]
        await super().record_signals(fresh)


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
    "SessionIndex",
    "SignalRecord",
    "StaleFencingToken",
    "State",
    "StateUnavailable",
    "Taken",
    "WorkingState",
    "replica_id",
]
