"""OpenAI Chat Completions and Responses API wire bodies for the fake LLM server.

Checked against the installed ``openai`` SDK (``types/chat/chat_completion*.py``,
``types/responses/*``, ``lib/streaming/chat/_completions.py`` and
``lib/streaming/responses/_responses.py``):

* Chat Completions streams are bare ``data: {...}`` events (no ``event:`` line) ending with
  ``data: [DONE]``. Tool-call deltas carry ``index`` always, and ``id`` / ``type`` / ``name``
  only in the first delta of each call: the SDK's accumulator *concatenates* strings, so a
  repeated ``id`` or ``name`` would come out doubled. Every tool-call delta needs a
  ``function`` object (the SDK asserts it). With ``stream_options={"include_usage": true}``
  every chunk has ``"usage": null`` and a final extra chunk has ``"choices": []`` and the usage.
* Responses streams are ``event: <type>`` + ``data: {...}`` with a ``sequence_number`` from 0,
  no ``[DONE]``. The SDK's stream state requires ``response.created`` first, a
  ``response.content_part.added`` before any ``response.output_text.delta`` of a message, an
  ``response.output_item.done`` for every added item, and the same response ``id`` in
  ``response.created`` and ``response.completed``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

SSEEvent = tuple[str | None, Mapping[str, Any] | str]
"""One server-sent event: (``event:`` name or None, ``data:`` dict or raw string)."""

ToolCall = tuple[str, str, str | Mapping[str, Any]]
"""(call id, function name, arguments as a JSON string — or a dict, which is dumped)."""

DEFAULT_OPENAI_MODEL = "gpt-5.1"

DONE: SSEEvent = (None, "[DONE]")

_ERROR_DEFAULTS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
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


def _arguments(arguments: str | Mapping[str, Any]) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(dict(arguments))


def openai_error(
    status: int,
    message: str = "fake error",
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """An OpenAI error body ``{"error": {"message", "type", "param", "code"}}``; ``type`` and
    ``code`` default from ``status`` (401 -> ``invalid_api_key``, 429 ->
    ``rate_limit_exceeded``)."""
    default_type, default_code = _ERROR_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {
            "message": message,
            "type": type or default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


# --------------------------------------------------------------------------- chat completions


def openai_chat_usage(usage: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A full chat ``usage`` object from ``prompt_tokens``, ``completion_tokens``,
    ``cached_tokens`` and ``reasoning_tokens`` (defaults 10, 5, 0, 0)."""
    given = dict(usage or {})
    prompt = given.get("prompt_tokens", 10)
    completion = given.get("completion_tokens", 5)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": given.get("cached_tokens", 0),
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": given.get("reasoning_tokens", 0),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(finish_reason: str | None, tool_calls: Sequence[ToolCall]) -> str:
    if finish_reason is not None:
        return finish_reason
    return "tool_calls" if tool_calls else "stop"


def openai_chat(
    text: str | None = None,
    tool_calls: Sequence[ToolCall] = (),
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    model: str = DEFAULT_OPENAI_MODEL,
    *,
    refusal: str | None = None,
    completion_id: str | None = None,
) -> dict[str, Any]:
    """A non-streaming ``POST /v1/chat/completions`` body with one choice.

    ``finish_reason`` defaults to ``"tool_calls"`` when there are tool calls, else ``"stop"``.
    ``message.tool_calls`` is omitted (not null) when there are none, as the API does.
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": refusal,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": _arguments(arguments)},
            }
            for call_id, name, arguments in tool_calls
        ]
    return {
        "id": completion_id or f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(finish_reason, tool_calls),
            }
        ],
        "usage": openai_chat_usage(usage),
        "service_tier": "default",
        "system_fingerprint": None,
    }


def openai_chat_stream(
    text: str | None = None,
    tool_calls: Sequence[ToolCall] = (),
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    model: str = DEFAULT_OPENAI_MODEL,
    *,
    include_usage: bool = True,
    completion_id: str | None = None,
    fragments: int = 3,
) -> list[SSEEvent]:
    """The ``data:``-only SSE chunks of a streaming chat completion, ending with ``[DONE]``.

    Role chunk (``{"role": "assistant", "content": "", "refusal": null}``), content deltas,
    then per tool call (``index`` 0, 1, ... — parallel calls stream one after another) a
    header delta ``{index, id, type: "function", function: {name, arguments: ""}}`` and
    argument fragments ``{index, function: {arguments}}``, a finish chunk (empty delta +
    ``finish_reason``) and — when ``include_usage`` (the request's
    ``stream_options={"include_usage": True}``) — a usage chunk with ``choices: []``.
    """
    chunk_id = completion_id or f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(
        choices: list[dict[str, Any]], chunk_usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = chunk_usage
        return body

    def delta(payload: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return chunk([{"index": 0, "delta": payload, "logprobs": None, "finish_reason": reason}])

    chunks = [delta({"role": "assistant", "content": "", "refusal": None})]
    chunks.extend(delta({"content": piece}) for piece in split_fragments(text or "", fragments))
    for index, (call_id, name, arguments) in enumerate(tool_calls):
        header = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        chunks.append(delta({"tool_calls": [header]}))
        chunks.extend(
            delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in split_fragments(_arguments(arguments), fragments)
        )
    chunks.append(delta({}, _finish_reason(finish_reason, tool_calls)))
    if include_usage:
        chunks.append(chunk([], openai_chat_usage(usage)))
    return [*((None, body) for body in chunks), DONE]


# --------------------------------------------------------------------------- responses


def openai_response_usage(usage: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A full Responses ``usage`` object from ``input_tokens``, ``output_tokens``,
    ``cached_tokens`` and ``reasoning_tokens`` (defaults 10, 5, 0, 0)."""
    given = dict(usage or {})
    input_tokens = given.get("input_tokens", 10)
    output_tokens = given.get("output_tokens", 5)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": given.get("cached_tokens", 0),
            "cache_write_tokens": 0,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": given.get("reasoning_tokens", 0)},
        "total_tokens": input_tokens + output_tokens,
    }


def _output_items(
    text: str | None, function_calls: Sequence[ToolCall], item_status: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if text is not None:
        items.append(
            {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "status": item_status,
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        )
    for call_id, name, arguments in function_calls:
        items.append(
            {
                "id": f"fc_{uuid.uuid4().hex[:24]}",
                "type": "function_call",
                "status": "completed",
                "call_id": call_id,
                "name": name,
                "arguments": _arguments(arguments),
            }
        )
    return items


def _response_body(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    finished = status in ("completed", "incomplete")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": created_at if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage if finished else None,
        "user": None,
        "metadata": {},
    }


def openai_response(
    text: str | None = None,
    function_calls: Sequence[ToolCall] = (),
    usage: Mapping[str, int] | None = None,
    status: str = "completed",
    model: str = DEFAULT_OPENAI_MODEL,
    *,
    response_id: str | None = None,
) -> dict[str, Any]:
    """A non-streaming ``POST /v1/responses`` body: a ``message`` item with one
    ``output_text`` part (if ``text`` is not None), then one ``function_call`` item per call.
    ``status="incomplete"`` sets ``incomplete_details.reason = "max_output_tokens"``."""
    item_status = "incomplete" if status == "incomplete" else "completed"
    return _response_body(
        response_id=response_id or f"resp_{uuid.uuid4().hex[:24]}",
        created_at=int(time.time()),
        model=model,
        status=status,
        output=_output_items(text, function_calls, item_status),
        usage=openai_response_usage(usage),
    )


def openai_response_stream(
    text: str | None = None,
    function_calls: Sequence[ToolCall] = (),
    usage: Mapping[str, int] | None = None,
    status: str = "completed",
    model: str = DEFAULT_OPENAI_MODEL,
    *,
    response_id: str | None = None,
    fragments: int = 3,
) -> list[SSEEvent]:
    """The ``event:`` + ``data:`` SSE events of a streaming ``POST /v1/responses``.

    ``response.created``, ``response.in_progress``; per message item ``output_item.added``
    (empty content), ``content_part.added``, ``output_text.delta``..., ``output_text.done``,
    ``content_part.done``, ``output_item.done``; per function call ``output_item.added``
    (``arguments: ""``), ``function_call_arguments.delta``..., ``function_call_arguments.done``,
    ``output_item.done``; finally ``response.completed`` (or ``response.incomplete`` when
    ``status="incomplete"``) carrying the full response with usage.
    """
    rid = response_id or f"resp_{uuid.uuid4().hex[:24]}"
    created_at = int(time.time())
    item_status = "incomplete" if status == "incomplete" else "completed"
    final_items = _output_items(text, function_calls, item_status)
    events: list[dict[str, Any]] = []

    def emit(event_type: str, **fields: Any) -> None:
        events.append({"type": event_type, "sequence_number": len(events), **fields})

    def snapshot(
        state: str, output: list[dict[str, Any]], final_usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return _response_body(
            response_id=rid,
            created_at=created_at,
            model=model,
            status=state,
            output=output,
            usage=final_usage,
        )

    emit("response.created", response=snapshot("in_progress", []))
    emit("response.in_progress", response=snapshot("in_progress", []))
    for output_index, item in enumerate(final_items):
        item_id = item["id"]
        if item["type"] == "message":
            part = item["content"][0]
            emit(
                "response.output_item.added",
                output_index=output_index,
                item={**item, "status": "in_progress", "content": []},
            )
            emit(
                "response.content_part.added",
                item_id=item_id,
                output_index=output_index,
                content_index=0,
                part={**part, "text": ""},
            )
            for piece in split_fragments(part["text"], fragments):
                emit(
                    "response.output_text.delta",
                    item_id=item_id,
                    output_index=output_index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            emit(
                "response.output_text.done",
                item_id=item_id,
                output_index=output_index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            emit(
                "response.content_part.done",
                item_id=item_id,
                output_index=output_index,
                content_index=0,
                part=part,
            )
        else:
            emit(
                "response.output_item.added",
                output_index=output_index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in split_fragments(item["arguments"], fragments):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=output_index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=output_index,
                name=item["name"],
                arguments=item["arguments"],
            )
        emit("response.output_item.done", output_index=output_index, item=item)
    terminal = "response.incomplete" if status == "incomplete" else "response.completed"
    emit(terminal, response=snapshot(status, final_items, openai_response_usage(usage)))
    return [(event["type"], event) for event in events]
