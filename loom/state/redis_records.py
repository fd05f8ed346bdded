"""How a run record is stored in Redis: only what is not known from elsewhere.

A session keeps up to ``max_runs`` records, so each byte counts many times over. The
stored JSON leaves out the run id (it is the hash field) and the session id (it is in the
key), keeps times as integer microseconds since the epoch (the end as the run's duration),
the status only when it is not ``completed``, the output and error only when there are
any, and of the usage only the counts that are not zero. ``decode_run`` gives back the
same ``RunRecord`` and also reads records stored whole by earlier versions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from loom.core.messages import Usage
from loom.core.session_store import RunRecord, usage_from

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_USAGE_KEYS = tuple(Usage().to_dict())
_DEFAULT_STATUS = "completed"


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


def encode_run(record: RunRecord) -> str:
    """The stored form of ``record`` (compact JSON; see the module's docstring)."""
    started = _micros(record.started_at)
    data: dict[str, Any] = {"t": started}
    if record.status != _DEFAULT_STATUS:
        data["s"] = record.status
    if record.output:
        data["o"] = record.output
    if record.error is not None:
        data["e"] = record.error
    if record.finished_at is not None:
        data["d"] = _micros(record.finished_at) - started
    if record.usage:
        if set(record.usage) == set(_USAGE_KEYS):
            # The usual case, a whole Usage: the zero counts are implied.
            data["u"] = {k: v for k, v in record.usage.items() if v}
        else:
            data["U"] = dict(record.usage)
    if record.metadata:
        data["m"] = record.metadata
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode_run(run_id: str, session_id: str, stored: str) -> RunRecord:
    """The record ``encode_run`` stored (or a whole record of an earlier version)."""
    data = json.loads(stored)
    if "run_id" in data:
        return RunRecord.from_dict(data)
    started = _EPOCH + timedelta(microseconds=int(data["t"]))
    usage: dict[str, Any] = {}
    if "u" in data:
        usage = dict.fromkeys(_USAGE_KEYS, 0) | data["u"]
    elif "U" in data:
        usage = data["U"]
    return RunRecord(
        run_id=run_id,
        session_id=session_id,
        status=str(data.get("s", _DEFAULT_STATUS)),
        output=str(data.get("o", "")),
        error=data.get("e"),
        usage=usage_from(usage),
        started_at=started,
        finished_at=None if "d" not in data else started + timedelta(microseconds=data["d"]),
        metadata=dict(data.get("m") or {}),
    )


__all__ = ["decode_run", "encode_run"]
