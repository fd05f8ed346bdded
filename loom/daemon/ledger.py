"""The decision step's ledger in the daemon: the shared state and the broker.

Dedupe keys are claimed in the state for ``dedupe_ttl`` (a key held by the same signal is a
redelivery after a crash, decided again); every decision of a batch is written in one
transaction; each woken session gets one work notice on the broker.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from loom import metrics
from loom.broker.base import Broker
from loom.core.attention import Action, Scheduler, SessionView
from loom.runtime.decisions import SignalDecision
from loom.signals import RuntimeSignal
from loom.state.claims import Claims
from loom.state.working import SignalRecord, WorkingState
from loom.wire import PendingSignal, decision_record, publish_work

RISK_URGENCIES = frozenset({"high", "critical"})


class StateLedger:
    """Claims dedupe keys in ``claims``, keeps decisions in ``working`` (one state backend
    may be both) and wakes workers through ``broker``."""

    def __init__(
        self,
        claims: Claims,
        working: WorkingState,
        broker: Broker,
        *,
        dedupe_ttl: float,
        traces: dict[str, dict[str, str]] | None = None,
        grouping: Scheduler | None = None,
    ) -> None:
        self.claims = claims
        self.working = working
        self.broker = broker
        self.dedupe_ttl = dedupe_ttl
        self.traces = traces or {}
        """Each signal's trace context by signal id, kept with its pending record."""
        self.grouping = grouping
        """The policy's group keys, read into the views of a policy that folds by group."""
        self._quiet: set[str] = set()
        """Sessions of this batch that need no work notice (``record_signals``): held by a
        worker when the records landed, or with a notice out already."""

    async def claim(self, signals: Sequence[RuntimeSignal]) -> list[bool]:
        holders = iter(
            await self.claims.claim_many(
                [(f"signal:{s.dedupe_key}", s.id, self.dedupe_ttl) for s in signals if s.dedupe_key]
            )
        )
        duplicates = []
        for signal in signals:
            held = next(holders) if signal.dedupe_key else None
            duplicates.append(held is not None and held != signal.id)
        return duplicates

    async def views(self, session_ids: Sequence[str]) -> dict[str, SessionView]:
        contexts = await self.working.decision_contexts(session_ids)
        views = {}
        for session_id, context in contexts.items():
            started, ended = context.last_run_started_ago, context.last_run_ended_ago
            running = context.busy and started is not None and (ended is None or ended > started)
            views[session_id] = SessionView(
                session_id=session_id,
                busy=context.busy,
                pending_signals=context.pending,
                active_risks=tuple(context.risks.values()),
                last_run_started_ago=started,
                last_run_ended_ago=ended,
                run_age=started if running else None,
            )
        if self.grouping is not None:
            for session_id, view in views.items():
                views[session_id] = await self._with_groups(view)
        return views

    async def _with_groups(self, view: SessionView) -> SessionView:
        """The groups pending or in the current run, and the pending by urgency."""
        assert self.grouping is not None
        pending = [PendingSignal.from_json(t) for t in await self.working.pending(view.session_id)]
        taken = [PendingSignal.from_json(t) for t in await self.working.in_flight(view.session_id)]
        asking = [p for p in (*pending, *taken) if p.action.wakes_a_worker]
        groups = {self.grouping.group_of(p.signal) for p in asking}
        by_urgency = Counter[str](p.signal.urgency for p in pending if p.action.wakes_a_worker)
        return replace(
            view,
            groups=frozenset(g for g in groups if g is not None),
            pending_by_urgency=dict(by_urgency),
        )

    async def record(self, decisions: Sequence[SignalDecision]) -> None:
        for decision in decisions:
            if not decision.duplicate:
                await self._track_risk(decision.signal)
        self._quiet = await self.working.record_signals([self._record(d) for d in decisions])
        # Put-off runs go to the due set (durable: any worker's sweep starts them when
        # due); a signal that wakes at once takes the session's put-off signals with it
        # (its record, marking the session ready, forgets the put-off run).
        now = {d.session_id for d in decisions if _at_once(d)}
        for decision in decisions:
            timing = decision.timing
            if timing is not None and decision.session_id not in now:
                await self.working.schedule(decision.session_id, timing.delay, timing.max_wait)
                metrics.ATTENTION_DEBOUNCED.inc()

    async def wake(self, decisions: Sequence[SignalDecision]) -> list[SignalDecision]:
        # A session a worker holds needs no notice: its holder's run ending takes the
        # signals (a notice would only be dropped by the worker that takes it). Nor does
        # one a notice is out for: whoever takes its lease first takes these signals too.
        woken = dict.fromkeys(
            d.session_id for d in decisions if _at_once(d) and d.session_id not in self._quiet
        )
        await asyncio.gather(*(publish_work(self.broker, session_id) for session_id in woken))
        return list(decisions)

    def _record(self, decision: SignalDecision) -> SignalRecord:
        # The signal is pending before the interrupt is requested: a run that takes the
        # pending list then already holds the signal and ignores the request.
        signal, action = decision.signal, decision.action
        pending = PendingSignal(signal, action, self.traces.get(signal.id))
        return SignalRecord(
            decision.session_id,
            decision_record(signal, action, decision.reason),
            pending_json=pending.to_json() if action.keeps_signal else None,
            interrupt=(signal.id, decision.reason) if action.interrupts else None,
            ready=_at_once(decision),
            signal_id=signal.id,
        )

    async def _track_risk(self, signal: RuntimeSignal) -> None:
        """High and critical signals become active risks until a resolving signal clears them.

        The risk's key is ``payload.risk_key``, else the dedupe key, else the signal id; a
        signal with ``payload.status == "resolved"`` clears the risk with its key.
        """
        session_id = str(signal.session_id)
        key = str(signal.payload.get("risk_key") or signal.dedupe_key or signal.id)
        if signal.payload.get("status") == "resolved":
            await self.working.clear_risk(session_id, key)
        elif signal.urgency in RISK_URGENCIES:
            await self.working.set_risk(session_id, key, signal.describe()[:1000])


def _at_once(decision: SignalDecision) -> bool:
    """The decision wakes a worker now (not put off by the policy's schedule)."""
    return decision.action.wakes_a_worker and decision.timing is None


def pending_json(
    signal: RuntimeSignal, action: Action | str, trace: dict[str, str] | None = None
) -> str:
    """A pending record as the attention role writes it (tests write them by hand too)."""
    return PendingSignal(signal, Action.parse(action), trace).to_json()


__all__ = ["RISK_URGENCIES", "StateLedger", "pending_json"]
