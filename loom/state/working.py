"""A session's working state, as the attention role and the workers share it: the
``WorkingState`` port.

Per session: the signals pending for the next run, the signals a run has taken (in flight),
the active risks, the attention decisions and the interrupt requests; across sessions, the
ready set (sessions that need a run). The attention role writes a batch of decisions at a
time (``record_signals``) after reading what it needs of the sessions
(``decision_contexts``). Everything is bounded.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from loom.core.attention import Action

NOTICE_WINDOW = 60.0
"""Seconds a work notice counts as out (``note_notices``): one still not taken after this
(queued behind a long backlog, or lost with a broker's queue) is asked again."""
DEFAULT_MAX_PENDING = 500
DEFAULT_MAX_DECISIONS = 200
DEFAULT_MAX_RISKS = 50
RECORDED_TTL = 86_400.0
"""Seconds a recorded signal id is remembered, so a redelivery is not recorded again."""


RECORDED_PREFIX = "signal-recorded:"


def recorded_key(signal_id: str) -> str:
    """The claim (``Claims``) that says a signal was recorded; forget it to record the
    signal again (a replay of the dead letters)."""
    return f"{RECORDED_PREFIX}{signal_id}"


WAKING_ACTIONS = tuple(action.value for action in Action if action.wakes_a_worker)
KNOWN_ACTIONS = tuple(action.value for action in Action)


def asks_for_run(records: Sequence[str]) -> bool:
    """Whether any pending record's action asks for a run (observed ones never do). A
    record whose action cannot be read counts as asking: taken in flight, the poison guard
    gives it up. Only the action is read (Redis scripts read the same)."""
    for record in records:
        try:
            action = json.loads(record).get("action")
        except (ValueError, AttributeError):
            return True
        if action in WAKING_ACTIONS or action not in KNOWN_ACTIONS:
            return True
    return False


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What the attention role reads of a session before deciding on a signal."""

    risks: dict[str, str]
    busy: bool
    pending: int
    last_run_started_ago: float | None = None
    last_run_ended_ago: float | None = None


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One attention decision to apply (see ``WorkingState.record_signal``)."""

    session_id: str
    decision_json: str
    pending_json: str | None = None
    interrupt: tuple[str, str] | None = None
    ready: bool = False
    signal_id: str = ""
    """When set, the record is applied once per signal id (``recorded_key``)."""


class WorkingState(ABC):
    """Pending and in-flight signals, risks, decisions, interrupts and the ready set.

    A backend implements the abstract methods (``busy`` comes free with ``State``, from the
    session's lease) and sets the three bounds. The attention batch (``decision_context``,
    ``record_signal`` and their batched forms) has defaults in terms of them; a backend that
    can do a batch in one round trip or one transaction overrides them.
    """

    max_pending: int = DEFAULT_MAX_PENDING
    max_decisions: int = DEFAULT_MAX_DECISIONS
    max_risks: int = DEFAULT_MAX_RISKS
    recorded_ttl: float = RECORDED_TTL
    """Seconds a signal's redelivery claim (``recorded_key``) is kept."""

    # -- pending and in flight ---------------------------------------------------------
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
    async def carry_over(self, session_id: str, signals_json: Sequence[str], ready: bool) -> None:
        """The run that took the in-flight signals was interrupted before treating them:
        atomically drop the in-flight list and put ``signals_json`` (those signals, marked
        as carried over) at the front of the pending list, oldest first, for the next run;
        mark the session ready when ``ready``."""

    # -- risks and decisions -----------------------------------------------------------
    @abstractmethod
    async def set_risk(self, session_id: str, key: str, text: str) -> None:
        """Add or replace an active risk (at most ``max_risks``; the oldest go first)."""

    @abstractmethod
    async def clear_risk(self, session_id: str, key: str) -> None:
        """Drop an active risk (no error when there is none)."""

    @abstractmethod
    async def risks(self, session_id: str) -> dict[str, str]:
        """Active risks by key, oldest first."""

    @abstractmethod
    async def record_decision(self, session_id: str, decision_json: str) -> None:
        """Keep an attention decision (the newest ``max_decisions``)."""

    @abstractmethod
    async def decisions(self, session_id: str, limit: int | None = None) -> list[str]:
        """The newest ``limit`` decisions (all that are kept when None), newest last."""

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

    # -- sessions that need a run ------------------------------------------------------
    @abstractmethod
    async def mark_ready(self, session_id: str) -> None:
        """The session has work; a worker should run it (idempotent)."""

    @abstractmethod
    async def clear_ready(self, session_id: str) -> None:
        """The session's work was taken (no error when it was not marked)."""

    @abstractmethod
    async def ready_sessions(self, limit: int = 100) -> list[str]:
        """Sessions marked ready, longest waiting first."""

    @abstractmethod
    async def busy(self, session_id: str) -> bool:
        """Whether a run holds the session now (``State``: a live lease)."""

    # -- runs put off (debounce, minimum interval), durable ----------------------------
    @abstractmethod
    async def schedule(self, session_id: str, delay: float, max_wait: float) -> None:
        """The session needs a run in ``delay`` seconds: each call pushes the start back,
        but never past ``max_wait`` seconds after the first call since the session's last
        take (``unschedule``)."""

    @abstractmethod
    async def unschedule(self, session_id: str) -> None:
        """Forget the session's put-off run (a run takes its signals now)."""

    @abstractmethod
    async def scheduled(self, session_id: str) -> bool:
        """Whether the session has a put-off run not yet due."""

    @abstractmethod
    async def promote_due(self, limit: int = 100) -> list[str]:
        """Move the sessions whose put-off run is due to the ready set, atomically (each
        is returned to one caller only); return them."""

    @abstractmethod
    async def note_run(self, session_id: str, *, ended: bool) -> None:
        """A run of the session started (or ended, ``ended``) now, on the state's clock."""

    @abstractmethod
    async def run_times(self, session_id: str) -> tuple[float | None, float | None]:
        """Seconds since the session's last run started and since it last ended."""

    # -- the attention role's hot path ------------------------------------------------
    async def decision_context(self, session_id: str) -> DecisionContext:
        """Active risks, whether a run holds the session, and the pending count, read
        together."""
        risks, busy, pending, (started, ended) = await asyncio.gather(
            self.risks(session_id),
            self.busy(session_id),
            self.pending_count(session_id),
            self.run_times(session_id),
        )
        return DecisionContext(risks, busy, pending, started, ended)

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
        ``(signal_id, reason)``, mark the session ready (and forget its put-off run: a run
        now takes its signals with it), record the decision. Backends that can do it in one
        transaction override this."""
        if pending_json is not None:
            await self.add_pending(session_id, pending_json)
        if interrupt is not None:
            await self.request_interrupt(session_id, *interrupt)
        if ready:
            await self.mark_ready(session_id)
            await self.unschedule(session_id)
        await self.record_decision(session_id, decision_json)

    async def decision_contexts(self, session_ids: Sequence[str]) -> dict[str, DecisionContext]:
        """``decision_context`` of several sessions; backends read them in one round trip."""
        unique = list(dict.fromkeys(session_ids))
        contexts = await asyncio.gather(*(self.decision_context(s) for s in unique))
        return dict(zip(unique, contexts, strict=True))

    async def record_signals(self, records: Sequence[SignalRecord]) -> set[str]:
        """``record_signal`` for each record, in order; backends write them in one
        transaction. Answers the sessions of ready records that need no work notice (only
        records written by this call count):

        - a worker held the session (its lease) once the record was in: the holder's run
          ending takes their signals;
        - a notice for the session is out (``note_notices``): the worker that takes it, or
          whichever takes the lease first, takes these signals too. A burst of signals to
          a session that waits for a worker queues one notice, not one a signal."""
        for record in records:
            await self.record_signal(
                record.session_id,
                decision_json=record.decision_json,
                pending_json=record.pending_json,
                interrupt=record.interrupt,
                ready=record.ready,
            )
        # After the writes: a holder seen now ends its run after them, and sees them.
        ready = dict.fromkeys(record.session_id for record in records if record.ready)
        held = {session_id for session_id in ready if await self.busy(session_id)}
        return held | await self.note_notices([s for s in ready if s not in held])

    async def note_notices(self, session_ids: Sequence[str]) -> set[str]:
        """Of sessions that need a work notice, those one is out for (asked less than
        ``NOTICE_WINDOW`` ago, and no lease taken on the session since); the others are
        noted as having one out from now. A backend that keeps no such note answers none:
        a notice for every record, which is never wrong, only more. A backend that keeps
        them must note them in one step with ``record_signals``' lease check, and end a
        session's note in the step that takes its lease: a note left after a worker took
        the session would keep its next signals without a notice."""
        return set()
