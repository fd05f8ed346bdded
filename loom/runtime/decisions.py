"""The decision step: dedupe, decide, record, wake, announce. One step for every signal,
whether a ``Session`` receives it in one process or the attention role in the daemon: the two
differ only in their ``SignalLedger`` (a session's memory, or the shared state and broker).

Hooks: ``signal_received(session_id, signal)`` for every signal, then, once the decisions
are recorded and the sessions woken, ``signal_decided(session_id, signal, decision)``; each
is emitted under the signal's own log context, even when a batch decides many signals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from loom.core.attention import APPROVAL_SIGNAL, Action, Decider, Scheduler, SessionView, Timing
from loom.core.hooks import HookManager
from loom.logs import log_context
from loom.signals import RuntimeSignal

if TYPE_CHECKING:
    from loom.runtime.run import Run


@dataclass(frozen=True, slots=True)
class SignalDecision:
    """A verdict on one signal, with the reason and the run it started, if any."""

    action: Action
    reason: str
    signal: RuntimeSignal
    run: Run | None = field(default=None, compare=False)
    duplicate: bool = field(default=False, compare=False)
    """The signal's dedupe key was held by another signal: dropped without asking a policy."""
    timing: Timing | None = field(default=None, compare=False)
    """When the run it wakes should start (None: at once); the daemon's ledger keeps it."""

    @property
    def session_id(self) -> str:
        return str(self.signal.session_id)

    def with_run(self, run: Run) -> SignalDecision:
        return replace(self, run=run)


class SignalLedger(Protocol):
    """Where a backend keeps what the decision step decides."""

    async def claim(self, signals: Sequence[RuntimeSignal]) -> list[bool]:
        """Claim each signal's dedupe key, in order; True where another signal holds it
        (a duplicate). A key held by the same signal (a redelivery) is not a duplicate."""
        ...

    async def views(self, session_ids: Sequence[str]) -> Mapping[str, SessionView]:
        """The sessions as a policy sees them (asked only of a policy that reads them)."""
        ...

    async def record(self, decisions: Sequence[SignalDecision]) -> None:
        """Apply the decisions to the sessions' working state: kept signals, interrupt
        requests, the decision log."""
        ...

    async def wake(self, decisions: Sequence[SignalDecision]) -> list[SignalDecision]:
        """Get the sessions that need a run going; returns the decisions, each with the run
        it started where this backend starts runs itself."""
        ...


RESUME_REASON = "a decision on an approval: the run waiting for it goes on"


def duplicate_decision(signal: RuntimeSignal) -> SignalDecision:
    return SignalDecision(
        Action.DROP, f"duplicate dedupe_key {signal.dedupe_key!r}", signal, duplicate=True
    )


async def decide_signals(
    signals: Sequence[RuntimeSignal],
    policy: Decider,
    ledger: SignalLedger,
    hooks: HookManager,
) -> list[SignalDecision]:
    """Decide on signals that name their session, in order, and act on the decisions."""
    duplicates = await ledger.claim(signals)
    views: Mapping[str, SessionView] = {}
    if len(duplicates) != len(signals):
        raise ValueError(f"a ledger claimed {len(duplicates)} of {len(signals)} signals")
    if policy.reads_session and not all(duplicates):
        fresh = (s for i, s in enumerate(signals) if not duplicates[i])
        views = await ledger.views(list(dict.fromkeys(str(s.session_id) for s in fresh)))
    announce_received = hooks.wants("signal_received")
    decisions: list[SignalDecision] = []
    # Indexing, not zip(strict=True): this runs for every signal, and the check above
    # already holds the lengths equal.
    for index, signal in enumerate(signals):
        if announce_received:
            await _announce(hooks, "signal_received", signal)
        if duplicates[index]:
            decisions.append(duplicate_decision(signal))
            continue
        session_id = str(signal.session_id)
        if signal.type == APPROVAL_SIGNAL:  # a person decided: no rule may drop that
            decisions.append(SignalDecision(Action.RESUME, RESUME_REASON, signal))
            continue
        view = views.get(session_id) or SessionView(session_id)
        action, reason = policy.decide(signal, view)
        action = Action.parse(action)
        timing = (
            policy.timing(signal, view, action)
            if action.wakes_a_worker and isinstance(policy, Scheduler)
            else None
        )
        decisions.append(SignalDecision(action, reason, signal, timing=timing))
    await ledger.record(decisions)
    decisions = await ledger.wake(decisions)
    if hooks.wants("signal_decided"):
        for decision in decisions:
            await _announce(hooks, "signal_decided", decision.signal, decision=decision)
    return decisions


async def _announce(
    hooks: HookManager, name: str, signal: RuntimeSignal, **payload: object
) -> None:
    with log_context(signal_id=signal.id, session_id=signal.session_id, run_id=None):
        await hooks.emit(name, session_id=signal.session_id, signal=signal, **payload)


__all__ = ["SignalDecision", "SignalLedger", "decide_signals", "duplicate_decision"]
