"""The attention vocabulary: what a signal deserves (``Action``), what a policy may see of
the session it is for (``SessionView``), and the port every attention policy implements
(``Decider``). The kernel and the daemon decide through these, never through a policy class.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from loom.signals import RuntimeSignal


class Action(StrEnum):
    """What a signal deserves. A ``str`` too: records and payloads carry its value."""

    OBSERVE = "observe"
    """Kept in the session's working state; the next run sees it, none is started for it."""
    QUEUE = "queue"
    """A run handles it, after the session's current run."""
    INTERRUPT = "interrupt"
    """A run handles it now: the current run is interrupted at its next step boundary."""
    DROP = "drop"
    """Forgotten (a duplicate, an expired or a muted signal); only the decision is kept."""

    @property
    def keeps_signal(self) -> bool:
        """The signal joins the session's working state."""
        return self is not Action.DROP

    @property
    def wakes_a_worker(self) -> bool:
        """The session needs a run for this signal (and the run answers its sender)."""
        return self is Action.QUEUE or self is Action.INTERRUPT

    @property
    def interrupts(self) -> bool:
        """The session's current run is asked to stop for this signal."""
        return self is Action.INTERRUPT

    @property
    def prompt_section(self) -> str:
        """The heading a run's input lists such signals under."""
        if self.wakes_a_worker:
            return "Signals to handle"
        if self is Action.OBSERVE:
            return "Observed since your last run (for awareness)"
        raise ValueError("a dropped signal is never shown to a run")

    @classmethod
    def parse(cls, value: object) -> Action:
        """The action named ``value``; ValueError naming the known ones otherwise."""
        if isinstance(value, Action):
            return value
        if isinstance(value, str) and value in cls._value2member_map_:
            return cls(value)
        known = ", ".join(action.value for action in cls)
        raise ValueError(f"unknown action {value!r}; actions are {known}")


@dataclass(frozen=True, slots=True)
class SessionView:
    """What a policy may look at of the session a signal is for."""

    session_id: str
    busy: bool = False
    pending_signals: int = 0
    active_risks: tuple[str, ...] = ()


class Decider(Protocol):
    """An attention policy as the decision step sees it (``AttentionPolicy`` is one)."""

    @property
    def reads_session(self) -> bool:
        """True when ``decide`` looks at the ``SessionView`` (busy, risks, pending): a
        backend then reads the session's state before deciding, else it need not."""
        ...

    def decide(self, signal: RuntimeSignal, view: SessionView) -> tuple[Action, str]:
        """The action the signal deserves, and why."""
        ...


__all__ = ["Action", "Decider", "SessionView"]
