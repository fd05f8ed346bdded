"""Settings-declared webhook mappings: dotted paths into a JSON body, as a SignalAdapter.

A path names keys separated by dots; a number indexes a list (``alerts.0.labels.env``). A
JSON ``null`` counts as missing. ``summary`` (when set) and every ``{path}`` placeholder of
``source`` and ``type`` must be present, else the request is refused with 422 naming the
path; a missing ``session_id``, ``dedupe_key`` or ``reply_to`` is simply left unset, and a
missing urgency path means ``normal``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from loom.errors import LoomError
from loom.signals import URGENCIES, SignalAdapter, session_id_from

if TYPE_CHECKING:
    from loom.adapters.webhook_settings import WebhookMapping


class WebhookError(LoomError):
    """The request cannot become a signal; answered with ``status`` and the message
    (``loom.adapters.webhook`` exports it; it lives here, where mappings raise it)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


_MISSING = object()
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")

Getter = Callable[[Mapping[str, Any]], Any]


def lookup(event: Any, path: str) -> Any:
    """The value at a dotted ``path``, or ``_MISSING``."""
    value = event
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return _MISSING if value is None else value


def text(value: Any) -> str:
    """A JSON value as text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def required(event: Any, path: str, field: str) -> str:
    value = lookup(event, path)
    if value is _MISSING:
        raise WebhookError(f"{field}: path {path!r} is not in the body")
    return text(value)


def template(spec: str, field: str) -> Getter:
    """``deploy.{status}``: placeholders filled with the values at their paths."""
    if not _PLACEHOLDER.search(spec):
        return lambda event: spec
    return lambda event: _PLACEHOLDER.sub(lambda m: required(event, m.group(1), field), spec)


def present(path: str, field: str, limit: int) -> Getter:
    return lambda event: required(event, path, field)[:limit]


def optional(path: str, *, prefix: str = "") -> Getter:
    def get(event: Mapping[str, Any]) -> str | None:
        value = lookup(event, path)
        return None if value is _MISSING else prefix + text(value)

    return get


def session(path: str) -> Getter:
    def get(event: Mapping[str, Any]) -> str | None:
        value = lookup(event, path)
        if value is _MISSING:
            return None
        return session_id_from(text(value))

    return get


def urgency(spec: str, value_map: Mapping[str, str]) -> Any:
    """A constant urgency, or a getter of the urgency at the path ``spec``."""
    if spec in URGENCIES:
        return spec

    def get(event: Mapping[str, Any]) -> str:
        value = lookup(event, spec)
        if value is _MISSING:
            return "normal"
        given = text(value)
        if given in value_map:
            return value_map[given]
        if given.lower() in URGENCIES:
            return given.lower()
        known = ", ".join(sorted(value_map)) or "none"
        raise WebhookError(
            f"urgency: {spec!r} is {given[:64]!r}, which is not low, normal, high or critical "
            f"nor a key of urgency_map (keys: {known})"
        )

    return get


def signal_adapter(name: str, mapping: WebhookMapping) -> SignalAdapter:
    """The SignalAdapter of a settings mapping. Dedupe keys are prefixed with ``name``, so
    two senders' delivery ids cannot collide; values too long for a signal get a 422."""
    fields: dict[str, Any] = {
        "source": template(mapping.source or name, "source"),
        "type": template(mapping.type, "type"),
        "urgency": urgency(mapping.urgency, mapping.urgency_map),
    }
    if mapping.summary:
        fields["summary"] = present(mapping.summary, "summary", 10_000)
    if mapping.session_id:
        fields["session_id"] = session(mapping.session_id)
    if mapping.dedupe_key:
        fields["dedupe_key"] = optional(mapping.dedupe_key, prefix=f"{name}:")
    if mapping.reply_to:
        fields["reply_to"] = optional(mapping.reply_to)
    return SignalAdapter(**fields)


def body_schema(mapping: WebhookMapping) -> dict[str, Any]:
    """The JSON schema of bodies ``mapping`` can map: an object with a non-null value at
    every path the signal needs (the summary, the placeholders of source and type). The
    values themselves are checked when a body arrives."""
    paths = [mapping.summary] if mapping.summary else []
    for spec in (mapping.source or "", mapping.type):
        paths.extend(match.group(1) for match in _PLACEHOLDER.finditer(spec))
    schema: dict[str, Any] = {"type": "object"}
    for path in paths:
        _require(schema, path.split("."))
    return schema


def _require(schema: dict[str, Any], parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if head.isdigit():
        return  # a list index or an object key: lookup takes both, so no shape is declared
    schema.setdefault("required", [])
    if head not in schema["required"]:
        schema["required"].append(head)
    properties = schema.setdefault("properties", {})
    if not rest:
        properties.setdefault(head, {"not": {"type": "null"}})
        return
    child = properties.setdefault(head, {"type": "object"})
    if child.get("type") != "object":  # already required as a leaf: now it needs keys too
        child.clear()
        child["type"] = "object"
    _require(child, rest)


__all__ = ["WebhookError", "body_schema", "lookup", "signal_adapter", "text"]
