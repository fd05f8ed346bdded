"""How signals, work notices and pending records are encoded on the broker.

Every role uses this one encoding (`loom.daemon.signals_io` is its deprecated old path)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from loom import tracing
from loom.broker.base import Broker, Message
from loom.core.attention import Action, urgency_reason
from loom.core.ids import pack_id, unpack_id
from loom.signals import RuntimeSignal
from loom.wire.topology import SIGNALS_EXCHANGE, WORK_EXCHANGE, WORK_ROUTING_KEY


def signal_routing_key(signal: RuntimeSignal) -> str:
    """``source.type`` with dots made safe, so topic bindings can select on both."""
    return f"{signal.source.replace('.', '_')}.{signal.type.replace('.', '_')}"


async def publish_signal(broker: Broker, signal: RuntimeSignal) -> None:
    """Publish a signal; returns once the broker confirmed it (else BrokerUnavailable).

    The headers carry the trace context (``traceparent``) when tracing is on."""
    # The body says its wire version ("version"); headers carry only the trace.
    body = signal.model_dump_json().encode()
    if tracing.quiet():  # no span to make, no trace to pass on: what the path below gives
        message = Message(body=body, headers={}, message_id=signal.id)
        await broker.publish(SIGNALS_EXCHANGE, signal_routing_key(signal), message)
        return
    attributes = tracing.signal_attributes(signal) if tracing.recording() else None
    with tracing.span("loom.signal.publish", kind="producer", attributes=attributes):
        message = Message(body=body, headers=tracing.inject({}), message_id=signal.id)
        await broker.publish(SIGNALS_EXCHANGE, signal_routing_key(signal), message)


async def publish_work(broker: Broker, session_id: str) -> None:
    """Tell the workers that ``session_id`` has work."""
    body = json.dumps({"session_id": session_id}).encode()
    await broker.publish(WORK_EXCHANGE, WORK_ROUTING_KEY, Message(body=body))


def parse_work(body: bytes) -> str:
    data = json.loads(body)
    session_id = data.get("session_id") if isinstance(data, dict) else None
    if not isinstance(session_id, str) or not session_id:
        raise ValueError("a work notice needs a session_id string")
    return session_id


@dataclass(frozen=True, slots=True)
class PendingSignal:
    """A signal waiting in a session's working state, with what attention decided for it,
    and the trace context of that decision (so the run that handles it joins the trace)."""

    signal: RuntimeSignal
    action: Action
    trace: dict[str, str] | None = None
    carried: int = 0
    """How many interrupted runs took this signal and handed it on untreated."""

    def to_json(self) -> str:
        # Composed around pydantic's own JSON: this runs for every signal decided.
        trace = f',"trace":{json.dumps(self.trace)}' if self.trace else ""
        carried = f',"carried":{self.carried}' if self.carried else ""
        signal = self.signal.model_dump_json()
        return f'{{"action":{json.dumps(self.action)},"signal":{signal}{trace}{carried}}}'

    def carried_over(self) -> PendingSignal:
        """This signal, handed on by a run that was interrupted before treating it."""
        return replace(self, carried=self.carried + 1)

    @classmethod
    def from_json(cls, text: str) -> PendingSignal:
        data: dict[str, Any] = json.loads(text)
        trace = data.get("trace")
        return cls(
            RuntimeSignal.model_validate(data["signal"]),
            Action.parse(data["action"]),
            tracing.text_carrier(trace) if isinstance(trace, dict) else None,
            int(data.get("carried") or 0),
        )


# A session keeps its newest decisions (LOOM_STATE__MAX_DECISIONS), so they are stored
# with one-letter keys, the time in milliseconds, a Loom signal id packed (``I``: 22
# characters, not 36) and the reason only when it is not the one the urgency gives
# (``urgency_reason``); ``decision_view`` gives them back whole.
_DECISION_KEYS = {
    "i": "signal_id",
    "s": "source",
    "t": "type",
    "u": "urgency",
    "m": "summary",
    "a": "action",
    "r": "reason",
}
_PACKED_SIGNAL_ID = "I"
DECISION_SUMMARY_CHARS = 200
"""How much of a signal's summary its decision keeps (the signal itself is in the run's input)."""


def decision_record(signal: RuntimeSignal, action: str, reason: str) -> str:
    """What the state keeps of an attention decision (compact; read it with
    ``decision_view``)."""
    packed = pack_id(signal.id, "sig_")
    data: dict[str, Any] = {"i": signal.id} if packed is None else {_PACKED_SIGNAL_ID: packed}
    data |= {
        "s": signal.source,
        "t": signal.type,
        "u": signal.urgency,
        "m": signal.summary[:DECISION_SUMMARY_CHARS],
        "a": action,
    }
    if reason != urgency_reason(signal.urgency, action):
        data["r"] = reason
    data["at"] = time.time_ns() // 1_000_000
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decision_view(stored: str) -> dict[str, Any]:
    """A stored decision as JSON-ready data: ``signal_id``, ``source``, ``type``,
    ``urgency``, ``summary``, ``action``, ``reason``, ``decided_at`` (ISO-8601). Decisions
    stored whole by earlier versions, and any other JSON object, come back as they are."""
    data = json.loads(stored)
    if not isinstance(data, dict) or "at" not in data:
        return data
    if _PACKED_SIGNAL_ID in data:
        data["i"] = unpack_id(data[_PACKED_SIGNAL_ID], "sig_")
    elif "i" not in data:
        return data
    if "r" not in data:
        data["r"] = urgency_reason(str(data.get("u")), str(data.get("a")))
    view = {name: data.get(short) for short, name in _DECISION_KEYS.items()}
    at = datetime.fromtimestamp(int(data["at"]) / 1000, UTC)
    view["decided_at"] = at.isoformat(timespec="milliseconds")
    return view
