"""AttentionPolicy: what a signal deserves (observe, queue, interrupt or drop), and why."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from loom import metrics
from loom.core.attention import Action, SessionView, Timing, urgency_reason
from loom.runtime.decisions import SignalDecision
from loom.signals import RuntimeSignal, Urgency

ACTIONS: tuple[Action, ...] = tuple(Action)

DEFAULT_BY_URGENCY: Mapping[Urgency, Action] = {
    "low": Action.OBSERVE,
    "normal": Action.QUEUE,
    "high": Action.QUEUE,
    "critical": Action.INTERRUPT,
}


DecideFn = Callable[[RuntimeSignal, SessionView], "Action | str | tuple[Action | str, str]"]

_MISSING = object()


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A delay: refused when negative (pydantic names the field)."""


class Schedule(BaseModel):
    """When a run starts for signals that ask for one (critical signals bypass all of it).

    ``debounce``: wait this many seconds of quiet (each new signal of the session pushes
    the start back) but at most ``max_wait`` seconds after the first waiting signal
    (default: ``debounce``, a fixed window). ``min_interval``: at least this long between
    the starts of two runs of a session. ``group``: dotted payload paths whose values,
    with the signal's source, make a group key; a signal whose group is already pending or
    in the current run is folded into that run's work (observed, starting none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    debounce: Seconds = 0.0
    max_wait: Seconds | None = None
    min_interval: Seconds = 0.0
    group: tuple[str, ...] = ()

    @property
    def window(self) -> float:
        return self.debounce if self.max_wait is None else max(self.max_wait, self.debounce)

    def over(self, defaults: Schedule) -> Schedule:
        """This rule's schedule, with ``defaults`` for what it does not set."""
        given = self.model_dump(exclude_unset=True)
        return defaults.model_copy(update=given) if given else defaults


class AttentionRule(BaseModel):
    """One rule: when every given condition holds, take ``action``.

    ``source`` and ``type`` are glob patterns (``github*``); ``urgency`` lists urgencies;
    ``payload`` maps dotted paths to required values (``{"alert.status": "firing"}``);
    ``busy`` matches the session being busy (True) or idle (False); ``has_risks`` whether
    the session has active risks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    source: str | None = None
    type: str | None = None
    urgency: tuple[Urgency, ...] = ()
    payload: dict[str, Any] = Field(default_factory=dict)
    busy: bool | None = None
    has_risks: bool | None = None
    reason: str | None = None
    debounce: Seconds | None = None
    max_wait: Seconds | None = None
    min_interval: Seconds | None = None
    group: tuple[str, ...] | None = None

    @property
    def schedule(self) -> Schedule:
        """The scheduling fields this rule sets (unset ones fall back to the policy's)."""
        fields = ("debounce", "max_wait", "min_interval", "group")
        return Schedule(**{f: getattr(self, f) for f in fields if getattr(self, f) is not None})

    def matches(self, signal: RuntimeSignal, view: SessionView) -> bool:
        return (
            (self.source is None or fnmatchcase(signal.source, self.source))
            and (self.type is None or fnmatchcase(signal.type, self.type))
            and (not self.urgency or signal.urgency in self.urgency)
            and all(_lookup(signal.payload, path) == want for path, want in self.payload.items())
            and (self.busy is None or view.busy == self.busy)
            and (self.has_risks is None or bool(view.active_risks) == self.has_risks)
        )

    @property
    def reads_session(self) -> bool:
        """True when matching needs the session's state (busy, risks)."""
        return self.busy is not None or self.has_risks is not None

    def describe(self) -> str:
        if self.reason:
            return self.reason
        parts = [
            f"{name}={value}"
            for name, value in (
                ("source", self.source),
                ("type", self.type),
                ("urgency", ",".join(self.urgency) or None),
                ("busy", self.busy),
                ("has_risks", self.has_risks),
            )
            if value is not None
        ]
        parts.extend(f"payload.{path}={value!r}" for path, value in self.payload.items())
        return f"rule {' '.join(parts) or '(any)'} -> {self.action}"


def _lookup(payload: Mapping[str, Any], path: str) -> Any:
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


class AttentionPolicy:
    """Decides per signal. Expired signals are always dropped.

    Rules (``AttentionPolicy.from_rules(...)``) are tried first, in order; then a custom
    function (``AttentionPolicy.custom(fn)``), which sees the signal and the session; then
    the urgency map: low observe, normal and high queue, critical interrupt.
    """

    def __init__(
        self,
        *,
        by_urgency: Mapping[Urgency, Action | str] | None = None,
        decide: DecideFn | None = None,
        rules: Sequence[AttentionRule] = (),
        schedule: Schedule | Mapping[str, Any] | None = None,
    ) -> None:
        self.by_urgency: dict[Urgency, Action] = dict(DEFAULT_BY_URGENCY)
        for urgency, action in (by_urgency or {}).items():
            try:
                self.by_urgency[urgency] = Action.parse(action)
            except ValueError as problem:
                raise ValueError(f"{problem} (for urgency {urgency!r})") from None
        self._decide = decide
        self.rules = tuple(rules)
        self.schedule = schedule if isinstance(schedule, Schedule) else Schedule(**(schedule or {}))
        schedules = [self.schedule, *(rule.schedule.over(self.schedule) for rule in self.rules)]
        self._groups = any(s.group for s in schedules)
        self._intervals = any(s.min_interval for s in schedules)

    @property
    def reads_session(self) -> bool:
        """True when a decision may depend on the session's state: a rule on ``busy`` or
        ``has_risks``, or a custom function. The daemon reads a session's state from Redis
        only for a policy that looks at it."""
        if self._decide is not None or self._groups or self._intervals:
            return True
        return bool(self.rules) and any(rule.reads_session for rule in self.rules)

    @property
    def reads_groups(self) -> bool:
        return self._groups

    def _rule_for(self, signal: RuntimeSignal, view: SessionView) -> AttentionRule | None:
        return next((rule for rule in self.rules if rule.matches(signal, view)), None)

    def _schedule_for(self, rule: AttentionRule | None) -> Schedule:
        return self.schedule if rule is None else rule.schedule.over(self.schedule)

    def group_of(self, signal: RuntimeSignal, rule: AttentionRule | None = None) -> str | None:
        """The signal's group key: its source and the values at the schedule's paths."""
        if rule is None:
            rule = self._rule_for(signal, SessionView(str(signal.session_id)))
        paths = self._schedule_for(rule).group
        values = [_lookup(signal.payload, path) for path in paths]
        if not paths or all(value is _MISSING for value in values):
            return None
        shown = ["" if value is _MISSING else str(value) for value in values]
        return "|".join([signal.source, *shown])

    def timing(self, signal: RuntimeSignal, view: SessionView, action: Action) -> Timing | None:
        """Debounce and minimum interval of the signal's rule (or the defaults); None for a
        critical signal, an interrupting action, or nothing to wait for."""
        if signal.urgency == "critical" or action.interrupts or not action.wakes_a_worker:
            return None
        schedule = self._schedule_for(self._rule_for(signal, view))
        delay = schedule.debounce
        if schedule.min_interval and view.last_run_started_ago is not None:
            delay = max(delay, schedule.min_interval - view.last_run_started_ago)
        if delay <= 0:
            return None
        return Timing(delay, max(schedule.window, delay))

    @classmethod
    def default(cls) -> AttentionPolicy:
        return cls()

    @classmethod
    def from_rules(
        cls,
        *rules: AttentionRule | Mapping[str, Any],
        by_urgency: Mapping[Urgency, Action | str] | None = None,
        schedule: Schedule | Mapping[str, Any] | None = None,
    ) -> AttentionPolicy:
        """The first matching rule decides; signals no rule matches fall back to urgency."""
        parsed = [r if isinstance(r, AttentionRule) else AttentionRule(**r) for r in rules]
        return cls(rules=parsed, by_urgency=by_urgency, schedule=schedule)

    @classmethod
    def custom(cls, decide: DecideFn) -> AttentionPolicy:
        return cls(decide=decide)

    def decide(
        self, signal: RuntimeSignal, view: SessionView, *, now: datetime | None = None
    ) -> tuple[Action, str]:
        if signal.expired(now):
            return Action.DROP, f"expired at {signal.expires_at}"
        action, reason = self._decide_action(signal, view)
        if self._groups and action.wakes_a_worker and signal.urgency != "critical":
            group = self.group_of(signal, self._rule_for(signal, view))
            if group is not None and group in view.groups:
                # Its group is already pending or being handled: that run covers it.
                metrics.ATTENTION_FOLDED.inc()
                return Action.OBSERVE, f"folded into the run for group {group!r}"
        return action, reason

    def _decide_action(self, signal: RuntimeSignal, view: SessionView) -> tuple[Action, str]:
        for rule in self.rules:
            if rule.matches(signal, view):
                return rule.action, rule.describe()
        if self._decide is not None:
            outcome = self._decide(signal, view)
            action, reason = outcome if isinstance(outcome, tuple) else (outcome, "custom policy")
            try:
                return Action.parse(action), reason
            except ValueError as problem:
                raise ValueError(f"attention policy returned an {problem}") from None
        action = self.by_urgency[signal.urgency]
        return action, urgency_reason(signal.urgency, action)


__all__ = [
    "ACTIONS",
    "DEFAULT_BY_URGENCY",
    "Action",
    "AttentionPolicy",
    "AttentionRule",
    "DecideFn",
    "Schedule",
    "SessionView",
    "SignalDecision",
]
