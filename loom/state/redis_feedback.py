"""How a feedback event is stored in Redis's streams: only what is not known from elsewhere.

Every session keeps a stream of its newest feedback events, so each byte counts many times
over; most of them are run outcomes, one per run. The state is handed each event as JSON
(``FeedbackEvent.to_json``) and must give the very same text back, so the compact form is
a lossless re-encoding of that text, stored under the entry field ``e`` (``event`` holds
the text as it came, as earlier versions stored every event): no session id (the
per-session stream's key and the stream of all's ``session`` field hold it), the time as
integer microseconds since the epoch, the random hex of the id, run id and signal ids
packed (``loom.state.redis_ids``), short names, the kind as a letter (none for a run's
outcome), the score and source left out when they are what the kind (and value) give
anyway, and a run outcome's cost left out when it is 0.0. ``encode_feedback`` checks that
``decode_feedback`` gives the text back byte for byte and otherwise stores it as it came,
so text of any other shape (another writer's, a hand-made event) is kept exactly too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from loom.core.ids import pack_id, pack_ids, unpack_id, unpack_ids

COMPACT = "e"
"""The entry field of an event in the compact form."""
WHOLE = "event"
"""The entry field of an event stored as it came (and of every event earlier versions stored)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = {"run_outcome": "o", "tool_failure": "t", "quality_verdict": "q", "explicit": "x"}
_KINDS_BY_CODE = {code: kind for kind, code in _KINDS.items()}
_USUAL_KIND = "run_outcome"
"""One per run, most of a session's events: its letter is left out."""
_SOURCES = {"run_outcome": "runtime", "tool_failure": "runtime", "quality_verdict": "quality"}
"""The source an event of the kind usually has (left out when it has it)."""
_SCORES: dict[tuple[str, Any], float] = {
    ("run_outcome", "completed"): 1.0,
    ("run_outcome", "failed"): -1.0,
    ("quality_verdict", "pass"): 1.0,
    ("quality_verdict", "fail"): -1.0,
    ("explicit", "up"): 1.0,
    ("explicit", "down"): -1.0,
}
"""The score the kind's value gives (see ``FeedbackPolicy``), left out when the event has it."""
_VALUES = {"run_outcome": "completed"}
"""The value an event of the kind usually has (left out when it has it)."""
_DATA_NAMES = {"duration": "d", "cost_usd": "c", "signals": "g", "tool_call_id": "tc"}
_DATA_KEYS_BY_NAME = {name: key for key, name in _DATA_NAMES.items()}
_COST = "cost_usd"
"""Left out of a run outcome's data when it is 0.0 (a free or unpriced model's runs)."""
_NO_COST = False
"""Stored as the cost of a run outcome whose data has none."""
_NO_SOURCE = 0
"""Stored as the source of an event whose JSON has none (``FeedbackEvent`` leaves out
``loom``), told apart from the kind's usual source, which is not stored."""
_ORDER = ("id", "kind", "session_id", "run_id", "value", "score", "comment", "source", "at")


def _given_score(kind: Any, value: Any) -> float | None:
    """The score the kind's value gives, if any (a value of any other type gives none: a
    list or an object cannot be looked up)."""
    return _SCORES.get((kind, value)) if isinstance(value, str) else None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _micros(at: str) -> int | None:
    """``at`` as integer microseconds since the epoch, when it is a UTC time that
    ``_iso`` gives back as the same text (None otherwise: it is stored as it is)."""
    try:
        moment = datetime.fromisoformat(at)
    except (TypeError, ValueError):
        return None
    if moment.utcoffset() != timedelta(0):
        return None
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return micros if _iso(micros) == at else None


def _iso(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).isoformat()


def _pack_signals(signals: Any) -> Any:
    """A run's signal ids as one string of packed ids, when each is ``sig_`` and hex."""
    packed = pack_ids(signals, "sig_")
    return signals if packed is None else packed


def _unpack_signals(stored: Any) -> Any:
    return unpack_ids(stored, "sig_") if isinstance(stored, str) else stored


def _compact(session_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The compact form of an event's fields (None when it cannot have one)."""
    kind = event.get("kind")
    if kind not in _KINDS or event.get("session_id") != session_id:
        return None
    if list(event) != [key for key in (*_ORDER, "data") if key in event]:
        return None  # fields out of order, or unknown ones: stored as they came
    out: dict[str, Any] = {}
    ident = event.get("id")
    packed = pack_id(ident, "fb_")
    if packed is not None:
        out["i"] = packed
    else:
        out["I"] = ident
    if kind != _USUAL_KIND:
        out["k"] = _KINDS[kind]
    if "run_id" in event:
        run_id = event["run_id"]
        packed = pack_id(run_id, "run_")
        if packed is not None:
            out["r"] = packed
        else:
            out["R"] = run_id
    value = event.get("value")
    if isinstance(value, list | dict):
        return None  # a hand-made value of another shape: stored as it came
    if value != _VALUES.get(kind):
        out["v"] = value
    if "score" in event and event["score"] != _given_score(kind, value):
        out["s"] = event["score"]
    if "comment" in event:
        out["c"] = event["comment"]
    source = event.get("source", _NO_SOURCE)
    if source != _SOURCES.get(kind, "api"):
        out["o"] = source
    micros = _micros(event.get("at"))  # type: ignore[arg-type]
    if micros is None:
        out["a"] = event.get("at")
    else:
        out["t"] = micros
    if "data" in event:
        data = event["data"]
        if not isinstance(data, dict):
            return None
        outcome = kind == _USUAL_KIND
        out["d"] = {
            _DATA_NAMES.get(key, key): _pack_signals(item) if key == "signals" else item
            for key, item in data.items()
            if not (outcome and key == _COST and _is_free(item))
        }
        if outcome and _COST not in data:
            out["d"][_DATA_NAMES[_COST]] = _NO_COST
    return out


def _is_free(cost: Any) -> bool:
    return type(cost) is float and cost == 0.0


def _with_cost(data: dict[str, Any]) -> dict[str, Any]:
    """A run outcome's data as it was before ``_compact``: without a cost where it had
    none, else with the zero cost it left out back in its place, after the duration
    (``FeedbackPolicy``'s order)."""
    if _COST in data:
        if data[_COST] is _NO_COST:
            del data[_COST]
        return data
    keys = list(data)
    at = keys.index("duration") + 1 if "duration" in keys else 0
    items = list(data.items())
    return dict([*items[:at], (_COST, 0.0), *items[at:]])


def _expanded(session_id: str, stored: dict[str, Any]) -> dict[str, Any]:
    """The event's fields back from ``_compact``'s form, in their order."""
    kind = _KINDS_BY_CODE[stored["k"]] if "k" in stored else _USUAL_KIND
    event: dict[str, Any] = {
        "id": unpack_id(stored["i"], "fb_") if "i" in stored else stored.get("I"),
        "kind": kind,
        "session_id": session_id,
    }
    if "r" in stored:
        event["run_id"] = unpack_id(stored["r"], "run_")
    elif "R" in stored:
        event["run_id"] = stored["R"]
    value = stored.get("v", _VALUES.get(kind))
    if value is not None:
        event["value"] = value
    score = stored.get("s", _given_score(kind, value))
    if score is not None:
        event["score"] = score
    if "c" in stored:
        event["comment"] = stored["c"]
    source = stored.get("o", _SOURCES.get(kind, "api"))
    if source != _NO_SOURCE:
        event["source"] = source
    event["at"] = _iso(stored["t"]) if "t" in stored else stored.get("a")
    if "d" in stored:
        data = stored["d"]
        event["data"] = {
            _DATA_KEYS_BY_NAME.get(key, key): _unpack_signals(item) if key == "g" else item
            for key, item in data.items()
        }
        if kind == _USUAL_KIND:
            event["data"] = _with_cost(event["data"])
    return event


def encode_feedback(session_id: str, event_json: str) -> tuple[str, str]:
    """The stream entry field and value that keep ``event_json`` of ``session_id``: the
    compact form when it gives the text back exactly, else the text as it is. Never
    raises: whatever the text, it is stored (the memory state takes any text too)."""
    try:
        event = json.loads(event_json)
        stored = _compact(session_id, event) if isinstance(event, dict) else None
        if stored is not None:
            compact = _dumps(stored)
            if decode_feedback(session_id, COMPACT, compact) == event_json:
                return COMPACT, compact
    except Exception:
        # The compact form only saves bytes: text it cannot give back (not JSON, a list as
        # a value, a null score it would fill) is stored as it came, whatever went wrong.
        pass
    return WHOLE, event_json


def decode_feedback(session_id: str, field: str, stored: str) -> str:
    """The event JSON ``encode_feedback`` stored under ``field`` (``event`` as it is)."""
    if field == WHOLE:
        return stored
    if field != COMPACT:
        raise ValueError(f"not a feedback entry field: {field!r}")
    return _dumps(_expanded(session_id, json.loads(stored)))


def stored_event(session_id: str, fields: dict[str, str]) -> str:
    """The event JSON of a stream entry's fields (either form). An entry in a compact form
    this version cannot expand (a newer version's: a kind it does not know) is given as
    stored, as the memory state gives any text it was handed: reading the others goes on,
    and ``FeedbackEvent.from_json`` refuses that one as it refuses any unreadable text."""
    if COMPACT in fields:
        try:
            return decode_feedback(session_id, COMPACT, fields[COMPACT])
        except (KeyError, TypeError, ValueError, AttributeError):
            return fields[COMPACT]
    return fields[WHOLE]


__all__ = ["COMPACT", "WHOLE", "decode_feedback", "encode_feedback", "stored_event"]
