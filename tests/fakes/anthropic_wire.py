"""Anthropic Messages API wire bodies for the fake LLM server.

Every builder returns plain JSON-able data exactly as ``api.anthropic.com`` sends it, checked
against the installed ``anthropic`` SDK (its ``Message`` / ``RawMessageStreamEvent`` types and
``lib/streaming/_messages.py`` accumulator):

* non-streaming: one ``message`` object (``anthropic_message``);
* streaming: a list of ``(event_name, data)`` pairs (``anthropic_stream``). Anthropic frames
  every SSE event as ``event: <type>`` + ``data: {...}``; the SDK silently *drops* events that
  have no ``event:`` line, so the name is always set (and equals ``data["type"]``);
* errors: ``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

SSEEvent = tuple[str | None, Mapping[str, Any] | str]
"""One server-sent event: (``event:`` name or None, ``data:`` dict or raw string)."""

ToolUse = tuple[str, str, Mapping[str, Any]]
"""(tool_use id, tool name, input object)."""

DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-5"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def split_fragments(text: str, parts: int) -> list[str]:
    """Cut ``text`` into at most ``parts`` non-empty, in-order pieces (``[]`` for "")."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces: list[str] = []
    start = 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def anthropic_usage(usage: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A full ``usage`` object; keys given in ``usage`` override the defaults."""
    given = dict(usage or {})
    cache_creation = given.get("cache_creation_input_tokens", 0)
    return {
        "input_tokens": given.get("input_tokens", 10),
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": given.get("cache_read_input_tokens", 0),
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_creation,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": given.get("output_tokens", 5),
        "service_tier": "standard",
    }


def _stop_reason(stop_reason: str | None, tool_uses: Sequence[ToolUse]) -> str:
    if stop_reason is not None:
        return stop_reason
    return "tool_use" if tool_uses else "end_turn"


def _stop_details(stop_reason: str) -> dict[str, Any] | None:
    if stop_reason != "refusal":
        return None
    return {"type": "refusal", "category": None, "explanation": None}


def anthropic_message(
    text: str = "",
    tool_uses: Sequence[ToolUse] = (),
    stop_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    model: str = DEFAULT_ANTHROPIC_MODEL,
    thinking: str | None = None,
    *,
    signature: str = "fake-thinking-signature",
    message_id: str | None = None,
) -> dict[str, Any]:
    """A non-streaming ``POST /v1/messages`` response body.

    Content order is thinking (if given), text (if non-empty), then one ``tool_use`` block per
    entry of ``tool_uses``. ``stop_reason`` defaults to ``"tool_use"`` when there are tool uses,
    else ``"end_turn"``.
    """
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": signature})
    if text:
        content.append({"type": "text", "text": text, "citations": None})
    for tool_id, name, tool_input in tool_uses:
        content.append({"type": "tool_use", "id": tool_id, "name": name, "input": dict(tool_input)})
    reason = _stop_reason(stop_reason, tool_uses)
    return {
        "id": message_id or f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "stop_details": _stop_details(reason),
        "usage": anthropic_usage(usage),
    }


def anthropic_stream(
    text: str = "",
    tool_uses: Sequence[ToolUse] = (),
    stop_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    model: str = DEFAULT_ANTHROPIC_MODEL,
    thinking: str | None = None,
    *,
    signature: str = "fake-thinking-signature",
    message_id: str | None = None,
    fragments: int = 3,
) -> list[SSEEvent]:
    """The SSE events of a streaming ``POST /v1/messages`` with the same content.

    ``message_start`` (empty content, ``stop_reason: null``, usage with input/cache counts and
    ``output_tokens: 1``), a ``ping``, then per block ``content_block_start`` /
    ``content_block_delta``... / ``content_block_stop`` (text: ``text_delta``; thinking:
    ``thinking_delta`` then one ``signature_delta``; tool_use: starts with ``input: {}`` and
    streams ``input_json_delta`` — a first empty ``partial_json`` as the API does, then the
    JSON cut into ``fragments`` pieces), then ``message_delta`` (stop_reason + cumulative usage)
    and ``message_stop``. Text and thinking are also cut into ``fragments`` deltas.
    """
    full_usage = anthropic_usage(usage)
    reason = _stop_reason(stop_reason, tool_uses)
    start_usage = {k: v for k, v in full_usage.items() if k != "output_tokens"}
    start_usage["output_tokens"] = 1
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": message_id or f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "stop_details": None,
                "usage": start_usage,
            },
        },
        {"type": "ping"},
    ]

    index = 0

    def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        nonlocal index
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events.extend(
            {"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas
        )
        events.append({"type": "content_block_stop", "index": index})
        index += 1

    if thinking is not None:
        thinking_deltas = [
            {"type": "thinking_delta", "thinking": piece}
            for piece in split_fragments(thinking, fragments)
        ]
        block(
            {"type": "thinking", "thinking": "", "signature": ""},
            [*thinking_deltas, {"type": "signature_delta", "signature": signature}],
        )
    if text:
        block(
            {"type": "text", "text": ""},
            [{"type": "text_delta", "text": piece} for piece in split_fragments(text, fragments)],
        )
    for tool_id, name, tool_input in tool_uses:
        arguments = json.dumps(dict(tool_input))
        block(
            {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
            [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in ["", *split_fragments(arguments, fragments)]
            ],
        )

    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": reason,
                "stop_sequence": None,
                "stop_details": _stop_details(reason),
            },
            "usage": {
                "input_tokens": full_usage["input_tokens"],
                "cache_creation_input_tokens": full_usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": full_usage["cache_read_input_tokens"],
                "output_tokens": full_usage["output_tokens"],
            },
        }
    )
    events.append({"type": "message_stop"})
    return [(event["type"], event) for event in events]


def anthropic_error(
    status: int,
    type: str | None = None,
    message: str = "fake error",
    *,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An Anthropic error body; ``type`` defaults from ``status`` (401 ->
    ``authentication_error``, 429 -> ``rate_limit_error``, 529 -> ``overloaded_error``...)."""
    error_type = type or _ERROR_TYPES.get(status, "api_error" if status >= 500 else "error")
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id or f"req_{uuid.uuid4().hex[:24]}",
    }


def anthropic_stream_error(type: str = "overloaded_error", message: str = "Overloaded") -> SSEEvent:
    """A mid-stream ``event: error`` (the SDK raises it as an ``APIStatusError``)."""
    return ("error", {"type": "error", "error": {"type": type, "message": message}})
