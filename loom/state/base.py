"""The daemon's shared state port: what every role of every replica agrees on.

Per session it holds the working state the agent sees at its next run (pending signals and
active risks), the signals a run is handling (in flight), the attention decisions, the
session lease with its fencing token, and interrupt requests; globally it holds dedupe keys
and the set of sessions that need a run. Feedback events are kept per session and for all.
Transcripts and run records are the kernel's ``SessionStore`` (``state.sessions``).
Everything is bounded.

Implementations: ``MemoryState`` (one process) and ``RedisState``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from loom.errors import LoomError
from loom.state.sessions import SessionStore

DEFAULT_MAX_PENDING = 500
DEFAULT_MAX_DECISIONS = 200
DEFAULT_MAX_RISKS = 50
DEFAULT_MAX_FEEDBACK = 10_000
"""Feedback events kept in the stream of all sessions."""
DEFAULT_MAX_SESSION_FEEDBACK = 200
"""Feedback events kept per session: one bound per session, so it must be small."""


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to run a session: held by ``owner`` with a strictly increasing ``token``."""

    session_id: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease held now, and for how long (seconds since it was acquired, on the backend's
    clock; renewals do not reset it)."""

    lease: Lease
    held_for: float


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What the attention role reads of a session before deciding on a signal."""

    risks: dict[str, str]
    busy: bool
    pending: int


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One attention decision to apply (see ``State.record_signal``)."""

    session_id: str
    decision_json: str
    pending_json: str | None = None
    interrupt: tuple[str, str] | None = None
    ready: bool = False


Taken = tuple[Literal["marked", "claimed"], str]
"""Why ``State.claim_unless_marked`` took nothing: ``("marked", marker value)`` or
``("claimed", owner holding the claim)``."""


class StaleFencingToken(Exception):
    """A write carried a fencing token older than one already seen for the session."""


def replica_id() -> str:
    """This process among the replicas, as the owner of leases and claims: host, pid and a
    random part (pids repeat across pods)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class StateUnavailable(LoomError):
    """The state backend cannot be reached (the message names it, with no password)."""


class State(ABC):
    """Port to Redis (or the in-process memory state)."""

    url: str = ""
    sessions: SessionStore
    """Transcripts and run records, the kernel's session store on the same backend."""

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

    async def start(self) -> None:  # noqa: B027 - optional
        """Connect (idempotent)."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Disconnect."""

    async def ping(self) -> bool:
        return True

    # -- dedupe ------------------------------------------------------------------------
    @abstractmethod
    async def remember(self, key: str, ttl: float) -> bool:
        """Record ``key`` for ``ttl`` seconds; True if it was new, False if already seen."""

    @abstractmethod
    async def claim(self, key: str, owner: str, ttl: float) -> str | None:
        """Take ``key`` for ``owner`` for ``ttl`` seconds: None if it was free (now taken),
        else the owner that holds it. Lets a redelivered message tell itself (same owner)
        from a duplicate (another owner) after a crash."""

    @abstractmethod
    async def claimed(self, key: str) -> str | None:
        """The owner holding ``key`` (``claim``), or None when it is free or expired."""

    @abstractmethod
    async def forget(self, key: str) -> None:
        """Drop a dedupe key (used when the work it guarded could not be accepted)."""

    # -- markers -----------------------------------------------------------------------
    @abstractmethod
    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store a small named value (e.g. a cron job's last fire time), replacing any
        earlier one; it expires after ``ttl`` seconds (None: never)."""

    @abstractmethod
    async def marker(self, key: str) -> str | None:
        """The value ``set_marker`` stored under ``key``, or None (never set or expired)."""

    # -- two-phase claims: a short claim while the work is under way, a marker once done --
    @abstractmethod
    async def claim_unless_marked(
        self, marker: str, key: str, owner: str, ttl: float
    ) -> Taken | None:
        """In one atomic step: unless the marker ``marker`` is set, ``claim(key, owner,
        ttl)``. None when the claim was taken; else ``("marked", value)`` (nothing claimed)
        or ``("claimed", holder)``. The gateway's accept path: marker = accepted, claim =
        being accepted right now."""

    @abstractmethod
    async def mark_and_release(
        self, marker: str, value: str, ttl: float, key: str, owner: str
    ) -> None:
        """In one atomic step: ``set_marker(marker, value, ttl)``, and release the claim
        ``key`` if ``owner`` still holds it (a claim that expired and was taken by another
        owner is left to that owner)."""

    # -- working state -----------------------------------------------------------------
    @abstractmethod
    async def add_pending(self, session_id: str, signal_json: str) -> int:
        """Append a signal (JSON) to the session's pending list; returns the list length.

        Past ``max_pending`` the oldest pending signals are dropped.
        """

    @abstractmethod
    async def pending(self, session_id: str) -> list[str]:
        """The pending signals, oldest first."""

    @abstractmethod
    async def pending_count(self, session_id: str) -> int:
        """How many signals are pending (without reading them)."""

    @abstractmethod
    async def take_pending(self, session_id: str) -> list[str]:
        """Atomically move every pending signal to the session's in-flight list, and drop
        the session's interrupt requests; return the whole in-flight list (signals left by
        a run that died come first)."""

    @abstractmethod
    async def in_flight(self, session_id: str) -> list[str]:
        """Signals a run has taken and not yet finished."""

    @abstractmethod
    async def finish_in_flight(self, session_id: str) -> None:
        """The run that took the in-flight signals ended: drop them."""

    @abstractmethod
    async def set_risk(self, session_id: str, key: str, text: str) -> None:
        """Add or replace an active risk (at most ``max_risks``; the oldest go first)."""

    @abstractmethod
    async def clear_risk(self, session_id: str, key: str) -> None: ...

    @abstractmethod
    async def risks(self, session_id: str) -> dict[str, str]:
        """Active risks by key, oldest first."""

    @abstractmethod
    async def record_decision(self, session_id: str, decision_json: str) -> None:
        """Keep an attention decision (the newest ``max_decisions``)."""

    @abstractmethod
    async def decisions(self, session_id: str, limit: int = 50) -> list[str]:
        """The newest decisions, newest last."""

    # -- the attention role's hot path ------------------------------------------------
    async def decision_context(self, session_id: str) -> DecisionContext:
        """Active risks, whether a lease is held, and the pending count, read together."""
        risks, holder, pending = await asyncio.gather(
            self.risks(session_id), self.lease_holder(session_id), self.pending_count(session_id)
        )
        return DecisionContext(risks, holder is not None, pending)

    async def record_signal(
        self,
        session_id: str,
        *,
        decision_json: str,
        pending_json: str | None = None,
        interrupt: tuple[str, str] | None = None,
        ready: bool = False,
    ) -> None:
        """Apply an attention decision: keep the signal pending, request the interrupt
        ``(signal_id, reason)``, mark the session ready, record the decision. Backends that
        can do it in one transaction override this."""
        if pending_json is not None:
            await self.add_pending(session_id, pending_json)
        if interrupt is not None:
            await self.request_interrupt(session_id, *interrupt)
        if ready:
            await self.mark_ready(session_id)
        await self.record_decision(session_id, decision_json)

    async def decision_contexts(self, session_ids: Sequence[str]) -> dict[str, DecisionContext]:
        """``decision_context`` of several sessions; backends read them in one round trip."""
        unique = list(dict.fromkeys(session_ids))
        contexts = await asyncio.gather(*(self.decision_context(s) for s in unique))
        return dict(zip(unique, contexts, strict=True))

    async def record_signals(self, records: Sequence[SignalRecord]) -> None:
        """``record_signal`` for each record, in order; backends write them in one
        transaction."""
        for record in records:
            await self.record_signal(
                record.session_id,
                decision_json=record.decision_json,
                pending_json=record.pending_json,
                interrupt=record.interrupt,
                ready=record.ready,
            )

    async def claim_many(self, claims: Sequence[tuple[str, str, float]]) -> list[str | None]:
        """``claim(key, owner, ttl)`` for each claim, in order."""
        return [await self.claim(key, owner, ttl) for key, owner, ttl in claims]

    # -- feedback ----------------------------------------------------------------------
    @abstractmethod
    async def add_feedback(self, session_id: str, event_json: str) -> None:
        """Append a feedback event (JSON) to the session's stream and to the stream of all
        sessions. The session's stream keeps the newest ``max_session_feedback``; the stream
        of all about the newest ``max_feedback`` (Redis trims it by whole stream nodes, so
        it may run up to about a hundred entries over)."""

    @abstractmethod
    async def read_feedback(self, session_id: str | None = None, limit: int = 50) -> list[str]:
        """The newest ``limit`` feedback events of one session (or of all), newest last."""

    # -- sessions that need a run ------------------------------------------------------
    @abstractmethod
    async def mark_ready(self, session_id: str) -> None:
        """The session has work; a worker should run it (idempotent)."""

    @abstractmethod
    async def clear_ready(self, session_id: str) -> None: ...

    @abstractmethod
    async def ready_sessions(self, limit: int = 100) -> list[str]:
        """Sessions marked ready, longest waiting first."""

    # -- leases ------------------------------------------------------------------------
    @abstractmethod
    async def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the session for ``ttl`` seconds if nobody holds it (or the holder's lease
        expired). The token is strictly greater than any token issued before for it."""

    @abstractmethod
    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        """Extend a lease still held by its owner with that token; False if it was lost."""

    @abstractmethod
    async def release_lease(self, lease: Lease) -> bool:
        """Give the session up; False if the lease had already been lost."""

    @abstractmethod
    async def lease_holder(self, session_id: str) -> Lease | None: ...

    @abstractmethod
    async def held_leases(self, limit: int = 100) -> list[HeldLease]:
        """Leases held now, longest held first (at most ``limit``): what a health check
        reads to find runs stuck past their timeout."""

    @abstractmethod
    async def check_fence(self, session_id: str, token: int) -> None:
        """Record ``token`` as the newest seen for the session; raise StaleFencingToken if a
        newer one was recorded before (a worker that lost its lease must stop writing)."""

    # -- interrupts --------------------------------------------------------------------
    @abstractmethod
    async def request_interrupt(self, session_id: str, signal_id: str, reason: str) -> None:
        """Ask whichever process runs the session to interrupt its current run for the
        signal ``signal_id`` (add that signal to the pending list first)."""

    @abstractmethod
    async def wait_interrupt(self, session_id: str, timeout: float) -> tuple[str, str] | None:
        """Wait up to ``timeout`` seconds for an interrupt request; return and remove the
        oldest as ``(signal_id, reason)``, or None. Requests made before the last
        ``take_pending`` are gone: that run already holds their signals."""
