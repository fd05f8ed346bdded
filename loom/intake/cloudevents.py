"""CloudEvents 1.0 (HTTP binding, structured and binary mode) to RuntimeSignal.

Mapping: ``source`` and ``type`` carry over; the summary is ``data.summary`` (or
``data.text``/``data.message``), else ``subject``, else ``type``; ``data`` becomes the payload
(non-object data as ``{"data": ...}``); ``time`` is ``observed_at``; the event's ``source`` and
``id`` make the dedupe key, since CloudEvents promises that pair unique. The extension
attributes ``loomsession`` and ``loomurgency`` choose the session and the urgency.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from loom.errors import LoomError, validation_details
from loom.intake.http import parse_json
from loom.signals import RuntimeSignal

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
REQUIRED = ("specversion", "id", "source", "type")
STRING_ATTRIBUTES = (*REQUIRED, "datacontenttype", "dataschema", "subject", "time")
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,64}$")


class CloudEventError(LoomError):
    """The request is not a valid CloudEvent; the message says what is wrong."""


def is_cloudevent(headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == STRUCTURED_CONTENT_TYPE or "ce-specversion" in headers


def parse_http(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The event's attributes and ``data`` from an HTTP request in either mode."""
    if "ce-specversion" in headers:  # binary mode: attributes in headers, data is the body
        event: dict[str, Any] = {
            name[3:]: value for name, value in headers.items() if name.startswith("ce-")
        }
        content_type = headers.get("content-type", "application/json")
        if body:
            if "json" in content_type:
                try:
                    event["data"] = parse_json(body)
                except ValueError as problem:  # bad JSON, nested too deep, or not UTF-8
                    raise CloudEventError(f"data is not JSON: {problem}") from problem
            else:
                event["data"] = body.decode("utf-8", "replace")
        return event
    try:
        event = parse_json(body)
    except ValueError as problem:  # bad JSON, nested too deep, or not UTF-8
        raise CloudEventError(f"body is not JSON: {problem}") from problem
    if not isinstance(event, dict):
        raise CloudEventError("a structured CloudEvent must be a JSON object")
    return event


def check_attributes(event: Mapping[str, Any]) -> None:
    """Raise CloudEventError unless the attributes follow the CloudEvents type system: the
    spec's own attributes are strings, extensions are strings, integers or booleans."""
    missing = [name for name in REQUIRED if not event.get(name)]
    if missing:
        raise CloudEventError(f"CloudEvent misses required attribute(s): {', '.join(missing)}")
    if "data" in event and "data_base64" in event:
        raise CloudEventError("a CloudEvent carries data or data_base64, not both")
    if "data_base64" in event and not isinstance(event["data_base64"], str):
        raise CloudEventError(f"data_base64 must be a string, not {_kind(event['data_base64'])}")
    for name, value in event.items():
        if name in ("data", "data_base64"):
            continue
        if name in STRING_ATTRIBUTES:
            if not isinstance(value, str):
                raise CloudEventError(f"attribute {name!r} must be a string, not {_kind(value)}")
        elif not EXTENSION_NAME.match(name):
            raise CloudEventError(
                f"extension attribute name {name[:80]!r} must be lowercase letters and digits"
            )
        elif not isinstance(value, str | int | bool) or isinstance(value, float):
            raise CloudEventError(
                f"extension attribute {name!r} must be a string, integer or boolean, "
                f"not {_kind(value)}"
            )


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def signal_from_cloudevent(event: Mapping[str, Any]) -> RuntimeSignal:
    check_attributes(event)
    if event["specversion"] != "1.0":
        raise CloudEventError(f"unsupported specversion {event['specversion']!r} (want 1.0)")
    data = event.get("data")
    payload = dict(data) if isinstance(data, Mapping) else ({} if data is None else {"data": data})
    if "data_base64" in event:  # binary data stays encoded: the payload is JSON
        payload = {"data_base64": event["data_base64"]}
    summary = next(
        (str(payload[k]) for k in ("summary", "text", "message") if payload.get(k)),
        str(event.get("subject") or event["type"]),
    )
    fields: dict[str, Any] = {
        "source": str(event["source"])[:128],
        "type": str(event["type"])[:128],
        "summary": summary[:10_000],
        "payload": payload,
        "dedupe_key": f"ce:{event['source']}:{event['id']}"[:512],
    }
    if "loomsession" in event:
        fields["session_id"] = event["loomsession"]
    if "loomurgency" in event:
        fields["urgency"] = event["loomurgency"]
    if "time" in event:
        try:
            fields["observed_at"] = datetime.fromisoformat(
                str(event["time"]).replace("Z", "+00:00")
            )
        except ValueError as problem:
            raise CloudEventError(f"time is not RFC 3339: {event['time']!r}") from problem
    try:
        return RuntimeSignal(**fields)
    except ValidationError as problem:
        details = validation_details(problem, root="signal")
        raise CloudEventError(f"CloudEvent does not map to a signal: {details}") from problem


__all__ = [
    "REQUIRED",
    "STRUCTURED_CONTENT_TYPE",
    "CloudEventError",
    "check_attributes",
    "is_cloudevent",
    "parse_http",
    "signal_from_cloudevent",
]
