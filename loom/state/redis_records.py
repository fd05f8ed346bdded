"""How a run record is stored in Redis: only what is not known from elsewhere.

A session keeps up to ``max_runs`` records, so each byte counts many times over. The
stored JSON leaves out the run id (it is the hash field) and the session id (it is in the
key), keeps times as integer microseconds since the epoch (the end as the run's duration),
the status only when it is not ``completed``, the output and error only when there are
any, and of the usage only the counts that are not zero, each under a short name. The
metadata the worker writes on every run (its signals, fencing token, worker and transcript
range) goes under short names too, the range as ``[from, count]``, the signal ids packed
(``G``, when each is a Loom ``sig_`` id: 22 characters, not 36) and the fencing token as
its distance from the start (``F``) when that is shorter, as Redis's clock-based tokens
are; any other metadata
stays as it is under ``m``. ``decode_run`` gives back the same ``RunRecord`` and also reads
the records earlier versions stored (whole, or with long names).

A run's output is most often its last reply, which the transcript keeps too. The append
script stores such a record without it (the output comes first, so it knows which bytes
to leave out: ``output_bytes``) and puts the reply's place in the transcript first instead
(``{"O":<entry>,...``). When the transcript is about to drop that entry the script gives
the record the reply's content back as its output (``loom.state.redis_sessions.
INLINE_OUTPUT``). So an output is stored once while the transcript keeps it, and kept
with the record after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from loom.core.ids import pack_ids, unpack_ids
from loom.core.messages import Message, Usage
from loom.core.session_store import RUN_TRANSCRIPT, RunRecord, usage_from

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_USAGE_KEYS = tuple(Usage().to_dict())
_DEFAULT_STATUS = "completed"
_USAGE_NAMES = {
    "input_tokens": "i",
    "output_tokens": "o",
    "cache_read_tokens": "cr",
    "cache_write_tokens": "cw",
    "reasoning_tokens": "rt",
    "requests": "r",
    "cost_usd": "c",
    "unpriced_requests": "ur",
}
"""The short name of each usage count (a count not named here is stored whole, ``U``)."""
_USAGE_KEYS_BY_NAME = {name: key for key, name in _USAGE_NAMES.items()}
_METADATA_NAMES = {"signals": "g", "fencing_token": "f", "worker": "w", RUN_TRANSCRIPT: "x"}
"""The run metadata every run of the worker carries, stored at the top under these names."""
_PACKED_SIGNALS = "G"
"""The run's signal ids packed (``loom.state.redis_ids``), when each is a Loom ``sig_`` id."""
_TOKEN_DELTA = "F"
"""The fencing token less the start (``t``), when that is shorter than the token."""
_OUTPUT_ENTRY = "O"
"""The transcript entry (counted from the session's first) whose content is the output."""


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


def _shorter_as_delta(token: int, started: int) -> bool:
    """Whether a fencing token is written in fewer digits as its distance from the run's
    start: Redis issues tokens from its clock in microseconds, a few ms before the start."""
    return len(str(token - started)) < len(str(token))


def is_last_reply(record: RunRecord, last: Message | None) -> bool:
    """Whether ``last``, the last message a run appends, is a reply holding ``record``'s
    output as is (its content is what the transcript entry gives back)."""
    return (
        bool(record.output)
        and last is not None
        and last.role == "assistant"
        and last.content == record.output
    )


def output_bytes(record: RunRecord) -> int:
    """The bytes ``"o":<output>,`` takes right after the ``{`` of ``encode_run(record)``."""
    return len(f'"o":{json.dumps(record.output, ensure_ascii=False)},'.encode())


def encode_run(record: RunRecord) -> str:
    """The stored form of ``record`` (compact JSON; see the module's docstring). The
    output, when there is one, comes first (``output_bytes``)."""
    data: dict[str, Any] = {}
    if record.output:
        data["o"] = record.output
    started = _micros(record.started_at)
    data["t"] = started
    if record.status != _DEFAULT_STATUS:
        data["s"] = record.status
    if record.error is not None:
        data["e"] = record.error
    if record.finished_at is not None:
        data["d"] = _micros(record.finished_at) - started
    if record.usage:
        if set(record.usage) == set(_USAGE_KEYS) <= set(_USAGE_NAMES):
            # The usual case, a whole Usage: the zero counts are implied.
            data["n"] = {_USAGE_NAMES[k]: v for k, v in record.usage.items() if v}
        else:
            data["U"] = dict(record.usage)
    rest = dict(record.metadata)
    for key, name in _METADATA_NAMES.items():
        value = rest.get(key)
        if key == RUN_TRANSCRIPT:
            if not (isinstance(value, dict) and set(value) == {"from", "count"}):
                continue  # not the worker's range: kept as it is under "m"
            value = [value["from"], value["count"]]
        elif key not in rest:
            continue
        del rest[key]
        packed = pack_ids(value, "sig_") if key == "signals" else None
        if packed is not None:
            data[_PACKED_SIGNALS] = packed
            continue
        if key == "fencing_token" and type(value) is int and _shorter_as_delta(value, started):
            data[_TOKEN_DELTA] = value - started
            continue
        data[name] = value
    if rest:
        data["m"] = rest
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode_run(
    run_id: str,
    session_id: str,
    stored: str,
    transcript: Sequence[str] = (),
    first_entry: int = 0,
) -> RunRecord:
    """The record ``encode_run`` stored (or a whole record of an earlier version).

    ``transcript`` is the session's stored transcript (message JSON), whose first item is
    entry ``first_entry``: it gives the output of a record stored without one. An output
    whose entry the transcript no longer holds (only when a version that knows nothing of
    this trimmed the transcript) reads as none."""
    data = json.loads(stored)
    if "run_id" in data:
        return RunRecord.from_dict(data)
    output = data.get("o", "")
    if _OUTPUT_ENTRY in data:
        place = int(data[_OUTPUT_ENTRY]) - first_entry
        if 0 <= place < len(transcript):
            output = json.loads(transcript[place])["content"]
    started = _EPOCH + timedelta(microseconds=int(data["t"]))
    usage: dict[str, Any] = {}
    if "n" in data:
        named = {_USAGE_KEYS_BY_NAME[name]: v for name, v in data["n"].items()}
        usage = dict.fromkeys(_USAGE_KEYS, 0) | named
    elif "u" in data:
        usage = dict.fromkeys(_USAGE_KEYS, 0) | data["u"]
    elif "U" in data:
        usage = data["U"]
    metadata = dict(data.get("m") or {})
    if _PACKED_SIGNALS in data:
        metadata["signals"] = unpack_ids(data[_PACKED_SIGNALS], "sig_")
    if _TOKEN_DELTA in data:
        metadata["fencing_token"] = int(data["t"]) + int(data[_TOKEN_DELTA])
    for key, name in _METADATA_NAMES.items():
        if name in data:
            value = data[name]
            if key == RUN_TRANSCRIPT and isinstance(value, list):
                value = {"from": value[0], "count": value[1]}
            metadata[key] = value
    return RunRecord(
        run_id=run_id,
        session_id=session_id,
        status=str(data.get("s", _DEFAULT_STATUS)),
        output=str(output),
        error=data.get("e"),
        usage=usage_from(usage),
        started_at=started,
        finished_at=None if "d" not in data else started + timedelta(microseconds=data["d"]),
        metadata=metadata,
    )


__all__ = ["decode_run", "encode_run", "is_last_reply", "output_bytes"]
