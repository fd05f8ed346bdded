"""AttentionPolicy: what a signal deserves (observe, queue, interrupt or drop), and why."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loom.core.attention import Action, SessionView
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
    ) -> None:
        self.by_urgency: dict[Urgency, Action] = dict(DEFAULT_BY_URGENCY)
        for urgency, action in (by_urgency or {}).items():
            try:
                self.by_urgency[urgency] = Action.parse(action)
            except ValueError as problem:
                raise ValueError(f"{problem} (for urgency {urgency!r})") from None
        self._decide = decide
        self.rules = tuple(rules)

    @property
    def reads_session(self) -> bool:
        """True when a decision may depend on the session's state: a rule on ``busy`` or
        ``has_risks``, or a custom function. The daemon reads a session's state from Redis
        only for a policy that looks at it."""
        if self._decide is not None:
            return True
        return bool(self.rules) and any(rule.reads_session for rule in self.rules)

    @classmethod
    def default(cls) -> AttentionPolicy:
        return cls()

    @classmethod
    def from_rules(
        cls,
        *rules: AttentionRule | Mapping[str, Any],
        by_urgency: Mapping[Urgency, Action | str] | None = None,
    ) -> AttentionPolicy:
        """The first matching rule decides; signals no rule matches fall back to urgency."""
        parsed = [r if isinstance(r, AttentionRule) else AttentionRule(**r) for r in rules]
        return cls(rules=parsed, by_urgency=by_urgency)

    @classmethod
    def custom(cls, decide: DecideFn) -> AttentionPolicy:
        return cls(decide=decide)

    def decide(
        self, signal: RuntimeSignal, view: SessionView, *, now: datetime | None = None
    ) -> tuple[Action, str]:
        if signal.expired(now):
            return Action.DROP, f"expired at {signal.expires_at}"
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
        return action, f"urgency {signal.urgency} -> {action}"


__all__ = [
    "ACTIONS",
    "DEFAULT_BY_URGENCY",
    "Action",
    "AttentionPolicy",
    "AttentionRule",
    "DecideFn",
    "SessionView",
    "SignalDecision",
]
