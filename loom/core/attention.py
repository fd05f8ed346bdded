"""The attention vocabulary: what a signal deserves (``Action``), what a policy may see of
the session it is for (``SessionView``), and the port every attention policy implements
(``Decider``). The kernel and the daemon decide through these, never through a policy class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from loom.signals import RuntimeSignal

APPROVAL_SIGNAL = "approval"
"""The ``type`` of a signal that carries a decision on an approval (``Action.RESUME``)."""


@dataclass(frozen=True, slots=True)
class Traits:
    """What an action does, in the terms every backend acts on."""

    keeps_signal: bool
    """The signal joins the session's working state."""
    wakes_a_worker: bool
    """The session needs a run for this signal (and the run answers its sender)."""
    interrupts: bool
    """The session's current run is asked to stop for this signal."""
    prompt_section: str | None
    """The heading a run's input lists such signals under (None: never shown to a run)."""
    resumes: bool = False
    """The signal carries a person's decision: the session's run waiting for it goes on."""


class Action(StrEnum):
    """What a signal deserves. A ``str`` too: records and payloads carry its value.

    What each action does is its row in ``TRAITS``: the ledgers, the worker and the reply
    path read the traits, never the names, so an action is added by a member and a row."""

    OBSERVE = "observe"
    """Kept in the session's working state; the next run sees it, none is started for it."""
    QUEUE = "queue"
    """A run handles it, after the session's current run."""
    INTERRUPT = "interrupt"
    """A run handles it now: the current run is interrupted at its next step boundary."""
    DROP = "drop"
    """Forgotten (a duplicate, an expired or a muted signal); only the decision is kept."""
    RESUME = "resume"
    """A decision on an approval (a signal of type ``approval``): the run waiting for it
    goes on. The decision step gives it to every approval signal, whatever the policy."""

    @property
    def traits(self) -> Traits:
        return TRAITS[self._value_]

    @property
    def keeps_signal(self) -> bool:
        return TRAITS[self._value_].keeps_signal

    @property
    def wakes_a_worker(self) -> bool:
        return TRAITS[self._value_].wakes_a_worker

    @property
    def interrupts(self) -> bool:
        return TRAITS[self._value_].interrupts

    @property
    def resumes(self) -> bool:
        return TRAITS[self._value_].resumes

    @property
    def prompt_section(self) -> str:
        section = TRAITS[self._value_].prompt_section
        if section is None:
            raise ValueError(f"a signal decided {self.value!r} is never shown to a run")
        return section

    @classmethod
    def parse(cls, value: object) -> Action:
        """The action named ``value``; ValueError naming the known ones otherwise."""
        if isinstance(value, Action):
            return value
        if isinstance(value, str) and value in cls._value2member_map_:
            return cls(value)
        known = ", ".join(action.value for action in cls)
        raise ValueError(f"unknown action {value!r}; actions are {known}")


TO_HANDLE = "Signals to handle"
TRAITS: dict[str, Traits] = {
    Action.OBSERVE: Traits(
        keeps_signal=True,
        wakes_a_worker=False,
        interrupts=False,
        prompt_section="Observed since your last run (for awareness)",
    ),
    Action.QUEUE: Traits(
        keeps_signal=True, wakes_a_worker=True, interrupts=False, prompt_section=TO_HANDLE
    ),
    Action.INTERRUPT: Traits(
        keeps_signal=True, wakes_a_worker=True, interrupts=True, prompt_section=TO_HANDLE
    ),
    Action.DROP: Traits(
        keeps_signal=False, wakes_a_worker=False, interrupts=False, prompt_section=None
    ),
    Action.RESUME: Traits(
        keeps_signal=False,
        wakes_a_worker=True,
        interrupts=False,
        prompt_section=None,
        resumes=True,
    ),
}
"""Each action's traits, by its value (an action without a row fails at import)."""
if set(TRAITS) != {action.value for action in Action}:
    raise RuntimeError(f"every Action needs a row in TRAITS: {sorted(set(Action) ^ set(TRAITS))}")


def urgency_reason(urgency: str, action: str) -> str:
    """The reason an attention policy gives for an action it takes by the signal's urgency
    alone. Decisions store only a reason that differs from it (``loom.wire.decision_record``)."""
    return f"urgency {urgency} -> {action}"


@dataclass(frozen=True, slots=True)
class SessionView:
    """What a policy may look at of the session a signal is for.

    Times are seconds ago on the state's clock (None: never); ``run_age`` is how long the
    current run has been going (None when the session is idle)."""

    session_id: str
    busy: bool = False
    pending_signals: int = 0
    active_risks: tuple[str, ...] = ()
    last_run_started_ago: float | None = None
    last_run_ended_ago: float | None = None
    run_age: float | None = None
    pending_by_urgency: Mapping[str, int] = field(default_factory=dict)
    """Pending signals that ask for a run, by urgency (read for a policy with groups)."""
    groups: frozenset[str] = frozenset()
    """Group keys of the signals pending or in the current run (see ``Scheduler``)."""


@dataclass(frozen=True, slots=True)
class Timing:
    """When a signal that wakes a worker should start its run: after ``delay`` seconds,
    each later signal of the session pushing the start back, but never later than
    ``max_wait`` seconds after the first delayed one."""

    delay: float
    max_wait: float


@runtime_checkable
class Scheduler(Protocol):
    """A policy that also says when a run should start (``AttentionPolicy`` is one)."""

    @property
    def reads_groups(self) -> bool:
        """True when a decision depends on ``SessionView.groups`` (the backend reads the
        session's pending and in-flight signals to fill them)."""
        ...

    def group_of(self, signal: RuntimeSignal) -> str | None:
        """The group key folding ``signal`` with related ones (None: in no group)."""
        ...

    def timing(self, signal: RuntimeSignal, view: SessionView, action: Action) -> Timing | None:
        """None: start at once (a critical signal, an action that wakes no worker)."""
        ...


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


__all__ = [
    "APPROVAL_SIGNAL",
    "TRAITS",
    "Action",
    "Decider",
    "Scheduler",
    "SessionView",
    "Timing",
    "Traits",
    "urgency_reason",
]
