"""The decision step's ledger in the daemon: the shared state and the broker.

Dedupe keys are claimed in the state for ``dedupe_ttl`` (a key held by the same signal is a
redelivery after a crash, decided again); every decision of a batch is written in one
transaction; each woken session gets one work notice on the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from loom.broker.base import Broker
from loom.core.attention import Action, SessionView
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
    ) -> None:
        self.claims = claims
        self.working = working
        self.broker = broker
        self.dedupe_ttl = dedupe_ttl
        self.traces = traces or {}
        """Each signal's trace context by signal id, kept with its pending record."""

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
        return {
            session_id: SessionView(
                session_id=session_id,
                busy=context.busy,
                pending_signals=context.pending,
                active_risks=tuple(context.risks.values()),
            )
            for session_id, context in contexts.items()
        }

    async def record(self, decisions: Sequence[SignalDecision]) -> None:
        for decision in decisions:
            if not decision.duplicate:
                await self._track_risk(decision.signal)
        await self.working.record_signals([self._record(d) for d in decisions])

    async def wake(self, decisions: Sequence[SignalDecision]) -> list[SignalDecision]:
        woken = dict.fromkeys(d.session_id for d in decisions if d.action.wakes_a_worker)
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
            ready=action.wakes_a_worker,
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


def pending_json(
    signal: RuntimeSignal, action: Action | str, trace: dict[str, str] | None = None
) -> str:
    """A pending record as the attention role writes it (tests write them by hand too)."""
    return PendingSignal(signal, Action.parse(action), trace).to_json()


__all__ = ["RISK_URGENCIES", "StateLedger", "pending_json"]
