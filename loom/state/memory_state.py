"""The in-process state: every ``State`` port in dicts, for ``loom run`` and tests.

Everything lives in this process and is lost when it exits; the semantics are the port's,
exactly, so code tested against it behaves the same on Redis.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loom.core.session_store import DEFAULT_MAX_MESSAGES, DEFAULT_MAX_RUNS
from loom.state.base import State
from loom.state.claims import Taken
from loom.state.endings import RunEnding
from loom.state.feedback_log import DEFAULT_MAX_FEEDBACK, DEFAULT_MAX_SESSION_FEEDBACK
from loom.state.leases import HeldLease, Lease, StaleFencingToken
from loom.state.memory_rate_limits import MemoryRateLimits
from loom.state.memory_sessions import InMemorySessionStore
from loom.state.session_index import SessionSummary
from loom.state.suspensions import MemorySuspensions
from loom.state.working import (
    DEFAULT_MAX_DECISIONS,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_RISKS,
    NOTICE_WINDOW,
    RECORDED_TTL,
)

DEFAULT_MAX_DEDUPE_KEYS = 100_000
FINISHED_KEPT = 100
"""Run ids of a session's stored endings remembered, so a retried ending is not stored
twice (a retry follows its first attempt within seconds)."""


@dataclass(slots=True)
class _Session:
    """One session's working state."""

    pending: deque[str]
    decisions: deque[str]
    interrupts: deque[tuple[str, str]]
    in_flight: list[str] = field(default_factory=list)
    outbox: dict[str, list[str]] = field(default_factory=dict)  # run id -> replies JSON
    finished: deque[str] = field(default_factory=lambda: deque(maxlen=FINISHED_KEPT))
    feedback: deque[str] = field(default_factory=deque)  # bounded when the state makes it
    risks: dict[str, str] = field(default_factory=dict)
    # (owner, token, expires at on the state's clock)
    lease: tuple[str, int, float] | None = None
    leased_at: float = 0.0  # when the current lease was acquired, on the state's clock
    run_started: float | None = None  # on the state's clock
    run_ended: float | None = None
    issued: int = 0  # the newest token issued for the session
    fence: int = 0  # the newest token a write was checked with
    condition: asyncio.Condition = field(default_factory=asyncio.Condition)


class MemoryState(State):
    """Every ``State`` port (claims, working state, leases, feedback) in this process's memory.

    Lease tokens come from one counter for the whole state, so they are strictly increasing
    per session as the port requires. ``clock`` (monotonic seconds) decides TTL expiry of
    dedupe keys, markers and leases. At most ``max_dedupe_keys`` unexpired dedupe keys are
    kept; past that the oldest are forgotten early. Markers have the same bound; past it the
    ones closest to expiry go first, so a flood of short-lived markers (one per signal the
    gateway accepted) cannot push out a cron job's or a probe's. Sessions are never
    dropped: this state is meant for one process, not for a long-lived fleet
    (``RedisState`` expires idle sessions).
    """

    url = "memory://"

    def __init__(
        self,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_decisions: int = DEFAULT_MAX_DECISIONS,
        max_risks: int = DEFAULT_MAX_RISKS,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_runs: int = DEFAULT_MAX_RUNS,
        max_dedupe_keys: int = DEFAULT_MAX_DEDUPE_KEYS,
        max_feedback: int = DEFAULT_MAX_FEEDBACK,
        max_session_feedback: int = DEFAULT_MAX_SESSION_FEEDBACK,
        recorded_ttl: float = RECORDED_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        bounds = (max_pending, max_decisions, max_risks, max_dedupe_keys, max_feedback,
                  max_session_feedback)  # fmt: skip
        if min(bounds) < 1:
            raise ValueError("state bounds must be at least 1")
        super().__init__(
            max_pending=max_pending,
            max_decisions=max_decisions,
            max_risks=max_risks,
            max_feedback=max_feedback,
            max_session_feedback=max_session_feedback,
            recorded_ttl=recorded_ttl,
        )
        self._feedback: deque[str] = deque(maxlen=max_feedback)  # of every session
        self.sessions = InMemorySessionStore(max_messages=max_messages, max_runs=max_runs)
        self.rate_limits = MemoryRateLimits(clock=clock)
        self.suspensions = MemorySuspensions(self.check_fence)
        self.max_dedupe_keys = max_dedupe_keys
        self._clock = clock
        self._dedupe: dict[str, float] = {}  # key -> expiry, in insertion order
        self._owners: dict[str, str] = {}  # key -> owner, for keys taken with claim()
        self._markers: dict[str, tuple[str, float]] = {}  # key -> (value, expiry)
        # (expiry, key) of every marker, soonest first; entries of replaced or expired
        # markers stay behind until popped or compacted.
        self._marker_expiries: list[tuple[float, str]] = []
        self._sweep_at = 1024
        self._sessions: dict[str, _Session] = {}
        self._ready: dict[str, None] = {}  # insertion order is first-marked order
        self._noticed: dict[str, float] = {}  # session -> notice asked at; oldest first
        self._due: dict[str, float] = {}  # put-off runs: session -> due, on the clock
        self._due_first: dict[str, float] = {}  # session -> its first put-off signal
        self._tokens = itertools.count(1)
        self._activity: dict[str, float] = {}  # session -> last active; oldest first

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = _Session(
                pending=deque(maxlen=self.max_pending),
                decisions=deque(maxlen=self.max_decisions),
                interrupts=deque(maxlen=self.max_pending),
                feedback=deque(maxlen=self.max_session_feedback),
            )
            self._sessions[session_id] = session
        return session

    # -- dedupe ------------------------------------------------------------------------

    async def claim(self, key: str, owner: str, ttl: float) -> str | None:
        now = self._clock()
        expiry = self._dedupe.get(key)
        if expiry is not None and expiry > now:
            return self._owners.get(key, "")
        self._dedupe.pop(key, None)
        self._dedupe[key] = now + ttl
        self._owners[key] = owner
        self._bound_dedupe(now)
        return None

    async def claimed(self, key: str) -> str | None:
        expiry = self._dedupe.get(key)
        if expiry is None or expiry <= self._clock():
            return None
        return self._owners.get(key, "")

    async def forget(self, key: str) -> None:
        self._dedupe.pop(key, None)
        self._owners.pop(key, None)

    def _bound_dedupe(self, now: float) -> None:
        if len(self._dedupe) >= self._sweep_at:
            # Amortised: a full sweep only each time the dict doubled since the last one.
            for key in [k for k, expiry in self._dedupe.items() if expiry <= now]:
                del self._dedupe[key]
                self._owners.pop(key, None)
            self._sweep_at = max(1024, 2 * len(self._dedupe))
        while len(self._dedupe) > self.max_dedupe_keys:
            oldest = next(iter(self._dedupe))
            del self._dedupe[oldest]
            self._owners.pop(oldest, None)

    # -- markers -----------------------------------------------------------------------

    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
        now = self._clock()
        expiry = float("inf") if ttl is None else now + ttl
        self._markers[key] = (value, expiry)
        heapq.heappush(self._marker_expiries, (expiry, key))
        self._bound_markers(now)

    def _bound_markers(self, now: float) -> None:
        """Drop the expired markers, then (past the bound) those closest to expiry."""
        heap, markers = self._marker_expiries, self._markers
        while heap and (heap[0][0] <= now or len(markers) > self.max_dedupe_keys):
            expiry, key = heapq.heappop(heap)
            stored = markers.get(key)
            if stored is not None and stored[1] == expiry:  # else a stale entry
                del markers[key]
        if len(heap) > 2 * len(markers) + 1024:  # mostly stale entries: rebuild
            self._marker_expiries = [(expiry, key) for key, (_, expiry) in markers.items()]
            heapq.heapify(self._marker_expiries)

    async def marker(self, key: str) -> str | None:
        stored = self._markers.get(key)
        if stored is None:
            return None
        if stored[1] <= self._clock():
            del self._markers[key]
            return None
        return stored[0]

    # -- two-phase claims (no await yields in between, so each is one atomic step) -------

    async def claim_unless_marked(
        self, marker: str, key: str, owner: str, ttl: float
    ) -> Taken | None:
        value = await self.marker(marker)
        if value is not None:
            return ("marked", value)
        holder = await self.claim(key, owner, ttl)
        return None if holder is None else ("claimed", holder)

    async def mark_and_release(
        self, marker: str, value: str, ttl: float, key: str, owner: str
    ) -> None:
        await self.set_marker(marker, value, ttl)
        if await self.claimed(key) == owner:
            await self.forget(key)

    # -- working state -----------------------------------------------------------------

    async def add_pending(self, session_id: str, signal_json: str) -> int:
        session = self._session(session_id)
        session.pending.append(signal_json)
        return len(session.pending)

    async def pending(self, session_id: str) -> list[str]:
        session = self._sessions.get(session_id)
        return [] if session is None else list(session.pending)

    async def pending_count(self, session_id: str) -> int:
        session = self._sessions.get(session_id)
        return 0 if session is None else len(session.pending)

    async def take_pending(self, session_id: str) -> list[str]:
        session = self._session(session_id)
        session.in_flight.extend(session.pending)
        session.pending.clear()
        session.interrupts.clear()
        # Runs that die again and again must not grow the list without bound.
        del session.in_flight[: -self.max_pending]
        return list(session.in_flight)

    async def in_flight(self, session_id: str) -> list[str]:
        session = self._sessions.get(session_id)
        return [] if session is None else list(session.in_flight)

    async def finish_in_flight(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.in_flight.clear()

    # -- run endings -------------------------------------------------------------------

    async def finish_run(self, token: int, ending: RunEnding) -> bool:
        session = self._session(ending.session_id)
        if ending.run_id in session.finished:
            return False
        await self.check_fence(ending.session_id, token)
        # The in-memory append never yields to the loop: the ending is one step.
        await self.sessions.append(
            ending.session_id,
            messages=ending.messages,
            run=ending.run,
            metadata=ending.metadata,
        )
        session.finished.append(ending.run_id)
        if ending.replies:
            session.outbox[ending.run_id] = list(ending.replies)
        session.in_flight.clear()
        self._active(ending.session_id)
        await self.note_run(ending.session_id, ended=True)
        for event in ending.feedback:
            await self.add_feedback(ending.session_id, event)
        return True

    async def unsent_replies(self, session_id: str) -> dict[str, list[str]]:
        session = self._sessions.get(session_id)
        return {} if session is None else {k: list(v) for k, v in session.outbox.items()}

    async def replies_sent(self, session_id: str, run_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.outbox.pop(run_id, None)

    async def carry_over(self, session_id: str, signals_json: Sequence[str], ready: bool) -> None:
        session = self._session(session_id)
        session.in_flight.clear()
        # Carried signals come first; past the bound the oldest pending go, as on add.
        kept = [*signals_json, *session.pending][-self.max_pending :]
        session.pending.clear()
        session.pending.extend(kept)
        if ready:
            await self.mark_ready(session_id)

    async def set_risk(self, session_id: str, key: str, text: str) -> None:
        risks = self._session(session_id).risks
        # A risk reported again counts as new: it moves to the end, last to be dropped.
        risks.pop(key, None)
        risks[key] = text
        while len(risks) > self.max_risks:
            del risks[next(iter(risks))]

    async def clear_risk(self, session_id: str, key: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.risks.pop(key, None)

    async def risks(self, session_id: str) -> dict[str, str]:
        session = self._sessions.get(session_id)
        return {} if session is None else dict(session.risks)

    async def record_decision(self, session_id: str, decision_json: str) -> None:
        self._session(session_id).decisions.append(decision_json)
        self._active(session_id)

    # -- the sessions by last activity -------------------------------------------------

    def _active(self, session_id: str) -> None:
        self._activity.pop(session_id, None)  # to the end: the dict stays in activity order
        self._activity[session_id] = time.time()

    async def recent_sessions(self, offset: int, limit: int) -> list[tuple[str, float]]:
        if limit <= 0 or offset < 0:
            return []
        newest_first = list(reversed(self._activity.items()))
        return newest_first[offset : offset + limit]

    async def count_sessions(self) -> int:
        return len(self._activity)

    async def activity_ranks(self, session_ids: Sequence[str]) -> dict[str, int]:
        last = len(self._activity) - 1
        ranks = {sid: last - at for at, sid in enumerate(self._activity)}
        return {sid: ranks[sid] for sid in session_ids if sid in ranks}

    async def session_summaries(self, session_ids: Sequence[str]) -> list[SessionSummary]:
        rows = []
        for sid in session_ids:
            decisions = await self.decisions(sid, 1)
            snapshot = await self.sessions.load(sid)
            runs = snapshot.runs if snapshot is not None else []
            newest = max(runs, key=lambda r: r.started_at, default=None)
            rows.append(
                SessionSummary(
                    sid,
                    self._activity.get(sid),
                    decisions[-1] if decisions else None,
                    None if newest is None else json.dumps(newest.to_dict()),
                )
            )
        return rows

    async def decisions(self, session_id: str, limit: int | None = None) -> list[str]:
        session = self._sessions.get(session_id)
        if session is None or (limit is not None and limit <= 0):
            return []
        return list(session.decisions)[-(limit or len(session.decisions)) :]

    # -- feedback ----------------------------------------------------------------------

    async def add_feedback(self, session_id: str, event_json: str) -> None:
        self._session(session_id).feedback.append(event_json)
        self._feedback.append(event_json)

    async def read_feedback(self, session_id: str | None = None, limit: int = 50) -> list[str]:
        if limit <= 0:
            return []
        if session_id is None:
            return list(self._feedback)[-limit:]
        session = self._sessions.get(session_id)
        return [] if session is None else list(session.feedback)[-limit:]

    # -- sessions that need a run ------------------------------------------------------

    async def mark_ready(self, session_id: str) -> None:
        self._ready.setdefault(session_id, None)

    async def clear_ready(self, session_id: str) -> None:
        self._ready.pop(session_id, None)

    async def ready_sessions(self, limit: int = 100) -> list[str]:
        return list(itertools.islice(self._ready, max(limit, 0)))

    async def note_notices(self, session_ids: Sequence[str]) -> set[str]:
        now = self._clock()
        while self._noticed:  # the lapsed notes go first: they are the oldest
            session_id, asked = next(iter(self._noticed.items()))
            if now - asked < NOTICE_WINDOW:
                break
            del self._noticed[session_id]
        out = {session_id for session_id in session_ids if session_id in self._noticed}
        for session_id in session_ids:
            if session_id not in out:
                self._noticed[session_id] = now
        return out

    # -- runs put off ------------------------------------------------------------------

    async def schedule(self, session_id: str, delay: float, max_wait: float) -> None:
        now = self._clock()
        first = self._due_first.setdefault(session_id, now)
        self._due[session_id] = min(now + delay, first + max_wait)

    async def unschedule(self, session_id: str) -> None:
        self._due.pop(session_id, None)
        self._due_first.pop(session_id, None)

    async def scheduled(self, session_id: str) -> bool:
        return session_id in self._due

    async def promote_due(self, limit: int = 100) -> list[str]:
        now = self._clock()
        due = sorted((at, sid) for sid, at in self._due.items() if at <= now)[: max(limit, 0)]
        for _, session_id in due:
            await self.unschedule(session_id)
            await self.mark_ready(session_id)
        return [session_id for _, session_id in due]

    async def note_run(self, session_id: str, *, ended: bool) -> None:
        session = self._session(session_id)
        if ended:
            session.run_ended = self._clock()
        else:
            session.run_started = self._clock()

    async def run_times(self, session_id: str) -> tuple[float | None, float | None]:
        session = self._sessions.get(session_id)
        if session is None:
            return None, None
        now = self._clock()
        return (
            None if session.run_started is None else now - session.run_started,
            None if session.run_ended is None else now - session.run_ended,
        )

    # -- leases ------------------------------------------------------------------------

    def _live_lease(self, session: _Session) -> tuple[str, int, float] | None:
        if session.lease is not None and session.lease[2] <= self._clock():
            session.lease = None
        return session.lease

    async def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        session = self._session(session_id)
        if self._live_lease(session) is not None:
            return None
        token = next(self._tokens)
        self._noticed.pop(session_id, None)  # the lease's holder takes the pending signals
        session.leased_at = self._clock()
        session.lease = (owner, token, session.leased_at + ttl)
        session.issued = token
        return Lease(session_id, owner, token)

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        session = self._sessions.get(lease.session_id)
        if session is None or not self._holds(session, lease):
            return False
        session.lease = (lease.owner, lease.token, self._clock() + ttl)
        return True

    async def release_lease(self, lease: Lease) -> bool:
        session = self._sessions.get(lease.session_id)
        if session is None or not self._holds(session, lease):
            return False
        session.lease = None
        return True

    def _holds(self, session: _Session, lease: Lease) -> bool:
        live = self._live_lease(session)
        return live is not None and live[:2] == (lease.owner, lease.token)

    async def lease_holder(self, session_id: str) -> Lease | None:
        session = self._sessions.get(session_id)
        live = None if session is None else self._live_lease(session)
        return None if live is None else Lease(session_id, live[0], live[1])

    async def held_leases(self, limit: int = 100) -> list[HeldLease]:
        now = self._clock()
        held = [
            (session.leased_at, HeldLease(Lease(sid, live[0], live[1]), now - session.leased_at))
            for sid, session in self._sessions.items()
            if (live := self._live_lease(session)) is not None
        ]
        held.sort(key=lambda item: item[0])
        return [lease for _, lease in held[: max(limit, 0)]]

    async def check_fence(self, session_id: str, token: int) -> None:
        session = self._session(session_id)
        # A token older than the newest issued is stale too: its lease was lost, even if
        # the new holder has not written yet.
        newest = max(session.fence, session.issued)
        if token < newest:
            raise StaleFencingToken(
                f"session {session_id}: fencing token {token} is older than {newest}"
            )
        session.fence = token

    # -- interrupts --------------------------------------------------------------------

    async def request_interrupt(self, session_id: str, signal_id: str, reason: str) -> None:
        session = self._session(session_id)
        async with session.condition:
            session.interrupts.append((signal_id, reason))
            # All waiters re-check: one takes the request, the others keep waiting.
            session.condition.notify_all()

    async def wait_interrupt(self, session_id: str, timeout: float) -> tuple[str, str] | None:
        session = self._session(session_id)
        if timeout <= 0:
            return session.interrupts.popleft() if session.interrupts else None
        try:
            async with asyncio.timeout(timeout), session.condition:
                await session.condition.wait_for(lambda: bool(session.interrupts))
                # Popped only here, with no await left: a timeout cannot lose it.
                return session.interrupts.popleft()
        except TimeoutError:
            return None
