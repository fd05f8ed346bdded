"""FeedbackPolicy: what the runtime learns about its own work, kept where it can be read.

``FeedbackPolicy.collector()`` turns the agent's hooks into ``FeedbackEvent``s (a finished
run is a ``run_outcome``, a failed tool call a ``tool_failure``), takes explicit feedback
(``POST /sessions/{id}/feedback``, Slack thumbs, ``policy.explicit(...)``) and quality
verdicts, and sends each event to three places: a bounded stream in the state (per session
and for all, so ``loom feedback`` reads it from any process), the Prometheus counters, and
the callbacks given to ``subscribe``. ``FeedbackPolicy.none()`` keeps nothing.

Unlike the 0.8 SDK's collector, the stream is bounded and shared by every replica.
Subscribers are called in the process that records the event: a gateway for HTTP feedback,
a worker for run outcomes.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loom.core.hooks import HookSource
from loom.signals import RuntimeSignal
from loom.state.feedback_log import (
    DEFAULT_MAX_FEEDBACK,
    DEFAULT_MAX_SESSION_FEEDBACK,
    FeedbackLog,
    hold,
)

logger = logging.getLogger("loom.feedback")

FeedbackKind = Literal["run_outcome", "tool_failure", "quality_verdict", "explicit"]
KINDS: tuple[FeedbackKind, ...] = get_args(FeedbackKind)
Verdict = Literal["pass", "fail"]
MAX_COMMENT = 2000
RUN_SCORES = {"completed": 1.0, "failed": -1.0}
"""Cancelled and interrupted runs say nothing about quality: they get no score."""
SLACK_REACTIONS = {"+1": "up", "thumbsup": "up", "-1": "down", "thumbsdown": "down"}
"""Slack reactions read as explicit feedback on the thread's session (skin tones ignored)."""

Subscriber = Callable[["FeedbackEvent"], Any]
_ALWAYS = frozenset({"id", "kind", "session_id", "at"})


def _kept(key: str, value: Any) -> bool:
    """Whether a field goes into an event's stored JSON (not when ``from_json`` would give
    the same value back without it)."""
    if key in _ALWAYS:
        return True
    return value not in (None, "", {}) and not (key == "source" and value == "loom")


def _now() -> datetime:
    return datetime.now(UTC)


def _rounded(seconds: Any) -> Any:
    # Microseconds are all a duration needs; the float's other digits cost bytes per event.
    return round(seconds, 6) if isinstance(seconds, float) else seconds


def _event_id() -> str:
    return f"fb_{uuid4().hex}"


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One piece of feedback on a session (and maybe one run of it).

    ``value`` is the kind's word (a run's status, the failing tool's name, ``up``/``down``,
    ``pass``/``fail``); ``score`` is the same as a number from -1 (bad) to 1 (good), when
    it has one.
    """

    kind: FeedbackKind
    session_id: str
    run_id: str | None = None
    value: str | None = None
    score: float | None = None
    comment: str = ""
    source: str = "loom"
    at: datetime = field(default_factory=_now)
    id: str = field(default_factory=_event_id)
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "session_id": self.session_id,
            "run_id": self.run_id,
            "value": self.value,
            "score": self.score,
            "comment": self.comment,
            "source": self.source,
            "at": self.at.isoformat(),
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        """Compact JSON for the state: empty and default fields are left out (every
        session keeps its newest events; ``from_json`` restores them)."""
        data = {
            key: value
            for key, value in self.to_dict().items()
            if key in _ALWAYS
            or (value not in (None, "", {}) and (key, value) != ("source", "loom"))
        }
        return json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FeedbackEvent:
        data: dict[str, Any] = json.loads(text)
        if data.get("kind") not in KINDS:
            raise ValueError(f"unknown feedback kind {data.get('kind')!r}")
        return cls(
            kind=data["kind"],
            session_id=str(data["session_id"]),
            run_id=data.get("run_id"),
            value=data.get("value"),
            score=None if data.get("score") is None else float(data["score"]),
            comment=str(data.get("comment") or ""),
            source=str(data.get("source") or "loom"),
            at=datetime.fromisoformat(data["at"]),
            id=str(data["id"]),
            data=dict(data.get("data") or {}),
        )


class ExplicitFeedback(BaseModel):
    """Feedback a person gives: a score from -1 to 1 or a thumb (``up``/``down``)."""

    # No stripping: the body is held to exactly what the OpenAPI document declares.
    model_config = ConfigDict(extra="forbid")

    score: float | None = Field(default=None, ge=-1.0, le=1.0)
    value: Literal["up", "down"] | None = None
    comment: str = Field(default="", max_length=MAX_COMMENT)
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")

    @model_validator(mode="after")
    def _score_or_value(self) -> ExplicitFeedback:
        if self.score is None and self.value is None:
            raise ValueError('give "score" (-1 to 1) or "value" ("up" or "down")')
        sign = {"up": 1.0, "down": -1.0, None: 0.0}[self.value]
        if self.score is not None and self.score * sign < 0:
            raise ValueError(f'"value" {self.value!r} contradicts "score" {self.score}')
        return self

    def resolved(self) -> tuple[str, float]:
        """The value and the score, each derived from the other when not given."""
        if self.score is None:
            return str(self.value), 1.0 if self.value == "up" else -1.0
        if self.value is not None:
            return self.value, self.score
        return ("up" if self.score > 0 else "down" if self.score < 0 else "neutral"), self.score


class FeedbackPolicy:
    """Collects feedback events; build one with ``collector()`` or ``none()``."""

    def __init__(
        self,
        *,
        enabled: bool,
        max_events: int = DEFAULT_MAX_FEEDBACK,
        max_session_events: int = DEFAULT_MAX_SESSION_FEEDBACK,
        run_outcomes: bool = True,
        tool_failures: bool = True,
        state: FeedbackLog | None = None,
    ) -> None:
        if max_events < 1 or max_session_events < 1:
            raise ValueError("max_events and max_session_events must be at least 1")
        self.enabled = enabled
        self.max_events = max_events
        self.max_session_events = max_session_events
        self.run_outcomes = run_outcomes
        self.tool_failures = tool_failures
        self._state = state
        self._subscribers: list[Subscriber] = []
        self._attached: weakref.WeakSet[HookSource] = weakref.WeakSet()

    @classmethod
    def collector(
        cls,
        *,
        max_events: int = DEFAULT_MAX_FEEDBACK,
        max_session_events: int = DEFAULT_MAX_SESSION_FEEDBACK,
        run_outcomes: bool = True,
        tool_failures: bool = True,
        state: FeedbackLog | None = None,
    ) -> FeedbackPolicy:
        """Record run outcomes, tool failures, quality verdicts and explicit feedback,
        keeping about the newest ``max_events`` of all sessions and the newest
        ``max_session_events`` of each session."""
        return cls(
            enabled=True,
            max_events=max_events,
            max_session_events=max_session_events,
            run_outcomes=run_outcomes,
            tool_failures=tool_failures,
            state=state,
        )

    @classmethod
    def none(cls) -> FeedbackPolicy:
        """Record nothing; explicit feedback is refused."""
        return cls(enabled=False, run_outcomes=False, tool_failures=False)

    # -- wiring ------------------------------------------------------------------------
    @property
    def state(self) -> FeedbackLog:
        """Where events are kept: the daemon's state once bound, else this process's."""
        if self._state is None:
            from loom.state.memory_state import MemoryState

            self._state = MemoryState(
                max_feedback=self.max_events, max_session_feedback=self.max_session_events
            )
        return self._state

    def bind(self, state: FeedbackLog) -> None:
        """Keep events in ``state`` (the daemon binds its shared state)."""
        self._state = state

    def attach(self, agent: HookSource) -> None:
        """Listen to the agent's hooks: finished runs and failed tool calls (idempotent)."""
        if not self.enabled or agent in self._attached:
            return
        self._attached.add(agent)
        agent.on("after_run", self._after_quality)
        if self.run_outcomes:
            agent.on("after_run", self._after_run)
        if self.tool_failures:
            agent.on("after_tool", self._after_tool)

    def subscribe(self, callback: Subscriber) -> Subscriber:
        """Call ``callback(event)`` (sync or async) for every event recorded here."""
        if not callable(callback):
            raise TypeError("a feedback subscriber must be callable")
        self._subscribers.append(callback)
        return callback

    def unsubscribe(self, callback: Subscriber) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    # -- recording ---------------------------------------------------------------------
    async def record(self, event: FeedbackEvent) -> FeedbackEvent | None:
        """Keep the event, count it, hand it to the subscribers; None when disabled.

        Raises ``StateUnavailable`` when the state cannot be written (nothing is counted).
        """
        if not self.enabled:
            return None
        event_json = event.to_json()
        # Inside a worker's run, the run's ending writes the event (one step, not two).
        if not hold(event.session_id, event_json):
            await self.state.add_feedback(event.session_id, event_json)
        from loom import metrics  # here, so importing the policy stays light

        metrics.FEEDBACK_EVENTS.labels(event.kind).inc()
        if event.kind == "quality_verdict" and event.value is not None:
            metrics.QUALITY_VERDICTS.labels(event.value).inc()
        for callback in list(self._subscribers):
            try:
                outcome = callback(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("feedback subscriber %r failed; the event is kept", callback)
        return event

    async def explicit(
        self,
        session_id: str,
        feedback: ExplicitFeedback,
        *,
        source: str = "api",
        data: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> FeedbackEvent | None:
        """Record feedback a person gave on a session (or one run of it)."""
        value, score = feedback.resolved()
        event = FeedbackEvent(
            "explicit",
            session_id,
            run_id=feedback.run_id,
            value=value,
            score=score,
            comment=feedback.comment,
            source=source,
            data=dict(data or {}),
            id=event_id or _event_id(),
        )
        return await self.record(event)

    async def quality_verdict(
        self,
        session_id: str,
        run_id: str | None,
        verdict: Verdict,
        *,
        comment: str = "",
        source: str = "quality",
    ) -> FeedbackEvent | None:
        """Record a quality gate's verdict on a run."""
        if verdict not in ("pass", "fail"):
            raise ValueError(f"a verdict is 'pass' or 'fail', not {verdict!r}")
        event = FeedbackEvent(
            "quality_verdict",
            session_id,
            run_id=run_id,
            value=verdict,
            score=1.0 if verdict == "pass" else -1.0,
            comment=comment[:MAX_COMMENT],
            source=source,
        )
        return await self.record(event)

    async def read(self, session_id: str | None = None, limit: int = 50) -> list[FeedbackEvent]:
        """The newest ``limit`` events (of one session, or of all), newest last."""
        return [
            FeedbackEvent.from_json(text)
            for text in await self.state.read_feedback(session_id, limit)
        ]

    # -- signals -----------------------------------------------------------------------
    def from_signal(self, signal: RuntimeSignal) -> FeedbackEvent | None:
        """The explicit feedback a signal carries, if any: a Slack ``reaction_added`` with
        a thumb up (``+1``, ``thumbsup``) or down (``-1``, ``thumbsdown``)."""
        if not self.enabled or signal.source != "slack" or signal.type != "reaction_added":
            return None
        reaction = str(signal.payload.get("reaction") or "")
        value = SLACK_REACTIONS.get(re.sub(r"::skin-tone-\d+$", "", reaction))
        if value is None or not signal.session_id:
            return None
        run_id = signal.payload.get("run_id")
        return FeedbackEvent(
            "explicit",
            signal.session_id,
            run_id=run_id if isinstance(run_id, str) else None,
            value=value,
            score=1.0 if value == "up" else -1.0,
            comment=f":{reaction}: from {signal.payload.get('user') or 'someone'}",
            source="slack",
            at=signal.observed_at,
            id=f"fb_{signal.id}",  # one event per signal, so a redelivery can be told apart
            data={"signal_id": signal.id, "channel": signal.payload.get("channel"),
                  "ts": signal.payload.get("ts")},
        )  # fmt: skip

    # -- hooks -------------------------------------------------------------------------
    async def _after_run(
        self, *, run_id: str, session_id: str, result: Mapping[str, Any], **_: Any
    ) -> None:
        status = str(result["status"])
        usage = result.get("usage") or {}
        await self.record(
            FeedbackEvent(
                "run_outcome",
                session_id,
                run_id=run_id,
                value=status,
                score=RUN_SCORES.get(status),
                comment=str(result.get("error") or "")[:MAX_COMMENT],
                source="runtime",
                data={
                    "duration": _rounded(result.get("duration")),
                    "cost_usd": usage.get("cost_usd"),
                    "signals": (result.get("metadata") or {}).get("signals"),
                },
            )
        )

    async def _after_quality(
        self, *, run_id: str, session_id: str, result: Mapping[str, Any], **_: Any
    ) -> None:
        """A run the quality gate judged: its verdict, with the unmet criteria."""
        quality = result.get("quality")
        if not quality:
            return
        unmet = [c for c in quality.get("criteria") or () if not c.get("met")]
        comment = "; ".join(f"{c.get('criterion')}: {c.get('reason') or 'not met'}" for c in unmet)
        await self.quality_verdict(
            session_id, run_id, "pass" if quality.get("passed") else "fail", comment=comment
        )

    async def _after_tool(
        self,
        *,
        run_id: str,
        session_id: str,
        tool_name: str,
        tool_call_id: str,
        result: str,
        success: bool,
        **_: Any,
    ) -> None:
        if success:
            return
        await self.record(
            FeedbackEvent(
                "tool_failure",
                session_id,
                run_id=run_id,
                value=tool_name,
                score=-1.0,
                comment=result[:500],
                source="runtime",
                data={"tool_call_id": tool_call_id},
            )
        )


__all__ = [
    "KINDS",
    "SLACK_REACTIONS",
    "ExplicitFeedback",
    "FeedbackEvent",
    "FeedbackKind",
    "FeedbackPolicy",
]
