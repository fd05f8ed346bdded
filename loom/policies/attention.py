"""AttentionPolicy: what a signal deserves (observe, queue, interrupt or drop), and why."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from loom.signals import RuntimeSignal, Urgency

if TYPE_CHECKING:
    from loom.runtime.run import Run

Action = Literal["observe", "queue", "interrupt", "drop"]
ACTIONS: tuple[Action, ...] = ("observe", "queue", "interrupt", "drop")

DEFAULT_BY_URGENCY: Mapping[Urgency, Action] = {
    "low": "observe",
    "normal": "queue",
    "high": "queue",
    "critical": "interrupt",
}


@dataclass(frozen=True, slots=True)
class SessionView:
    """What a policy may look at of the session a signal is for."""

    session_id: str
    busy: bool = False
    pending_signals: int = 0
    active_risks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SignalDecision:
    """A policy's verdict on one signal, with the reason and the run it started, if any."""

    action: Action
    reason: str
    signal: RuntimeSignal
    run: Run | None = field(default=None, compare=False)


DecideFn = Callable[[RuntimeSignal, SessionView], "Action | tuple[Action, str]"]


class AttentionPolicy:
    """Decides per signal. Expired signals are always dropped.

    The default maps urgency: low observe, normal and high queue, critical interrupt.
    ``AttentionPolicy.custom(fn)`` lets a function decide from the signal and the session.
    """

    def __init__(
        self,
        *,
        by_urgency: Mapping[Urgency, Action] | None = None,
        decide: DecideFn | None = None,
    ) -> None:
        self.by_urgency = {**DEFAULT_BY_URGENCY, **(by_urgency or {})}
        for urgency, action in self.by_urgency.items():
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r} for urgency {urgency!r}")
        self._decide = decide

    @classmethod
    def default(cls) -> AttentionPolicy:
        return cls()

    @classmethod
    def custom(cls, decide: DecideFn) -> AttentionPolicy:
        return cls(decide=decide)

    def decide(
        self, signal: RuntimeSignal, view: SessionView, *, now: datetime | None = None
    ) -> tuple[Action, str]:
        if signal.expired(now):
            return "drop", f"expired at {signal.expires_at}"
        if self._decide is not None:
            outcome = self._decide(signal, view)
            action, reason = outcome if isinstance(outcome, tuple) else (outcome, "custom policy")
            if action not in ACTIONS:
                raise ValueError(f"attention policy returned unknown action {action!r}")
            return action, reason
        action = self.by_urgency[signal.urgency]
        return action, f"urgency {signal.urgency} -> {action}"
