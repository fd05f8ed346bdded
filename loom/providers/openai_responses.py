"""The OpenAI Responses API: request translation, response parsing and streaming."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from loom.core.messages import Message, ToolCall, Usage
from loom.errors import ProviderError
from loom.providers.base import (
    DeltaHandler,
    ModelRequest,
    ModelResponse,
    StopReason,
    StreamDelta,
    tool_call_from_json,
)

_INCOMPLETE: dict[str, StopReason] = {
    "max_output_tokens": "max_tokens",
    "content_filter": "refusal",
}


def responses_params(model: str, request: ModelRequest, *, reasoning: bool) -> dict[str, Any]:
    """The request's fields but its ``input`` (sent serialised, see loom.providers.wire_body)."""
    generation = request.generation
    params: dict[str, Any] = {
        "model": model,
        # Stateless: the transcript is ours, so nothing is kept server-side.
        "store": False,
    }
    if request.instructions:
        params["instructions"] = request.instructions
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": False,
            }
            for t in request.tools
        ]
    if generation.max_output_tokens is not None:
        params["max_output_tokens"] = generation.max_output_tokens
    if reasoning:
        # Encrypted reasoning comes back so it can be replayed with the next turn.
        params["include"] = ["reasoning.encrypted_content"]
        if generation.reasoning_effort:
            params["reasoning"] = {"effort": generation.reasoning_effort}
    else:
        if generation.temperature is not None:
            params["temperature"] = generation.temperature
        if generation.top_p is not None:
            params["top_p"] = generation.top_p
    if generation.extensions:
        params["extra_body"] = dict(generation.extensions)
    return params


def to_response_input(messages: Sequence[Message]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "user":
            items.append({"role": "user", "content": message.content})
        elif message.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id,
                    "output": message.content,
                }
            )
        else:
            items.extend((message.provider_data or {}).get("openai_reasoning", ()))
            if message.content:
                items.append({"role": "assistant", "content": message.content})
            items.extend(
                {
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.raw_arguments
                    if call.raw_arguments is not None
                    else json.dumps(call.arguments),
                }
                for call in message.tool_calls
            )
    return items


def parse_response(response: Any) -> ModelResponse:
    text: list[str] = []
    calls: list[ToolCall] = []
    reasoning: list[dict[str, Any]] = []
    refused = False
    for item in response.output or ():
        if item.type == "message":
            for part in item.content or ():
                if part.type == "output_text":
                    text.append(part.text)
                elif part.type == "refusal":
                    refused = True
                    text.append(part.refusal)
        elif item.type == "function_call":
            calls.append(tool_call_from_json(item.call_id, item.name, item.arguments or ""))
        elif item.type == "reasoning":
            reasoning.append(item.model_dump(mode="json", exclude_none=True))
    stop: StopReason = "tool_use" if calls else "end_turn"
    if response.status == "incomplete":
        reason = getattr(response.incomplete_details, "reason", None) or ""
        stop = _INCOMPLETE.get(reason, "other")
    if refused:
        stop = "refusal"
    return ModelResponse(
        text="".join(text),
        tool_calls=tuple(calls),
        usage=responses_usage(response.usage),
        stop_reason=stop,
        model=response.model or "",
        provider_data={"openai_reasoning": reasoning} if reasoning else None,
    )


async def stream_response(stream: Any, on_delta: DeltaHandler) -> ModelResponse:
    """The response read from a Responses API event stream, its deltas passed on."""
    calls: dict[str, tuple[str, str]] = {}
    final: Any = None
    async for event in stream:
        kind = event.type
        if kind == "response.output_text.delta":
            await on_delta(StreamDelta("text", event.delta))
        elif kind == "response.reasoning_summary_text.delta":
            await on_delta(StreamDelta("thinking", event.delta))
        elif kind == "response.output_item.added" and event.item.type == "function_call":
            calls[event.item.id or event.item.call_id] = (event.item.call_id, event.item.name)
        elif kind == "response.function_call_arguments.delta":
            call_id, name = calls.get(event.item_id, (None, None))
            await on_delta(StreamDelta("tool_input", event.delta, call_id, name))
        elif kind in ("response.completed", "response.incomplete"):
            final = event.response
        elif kind == "response.failed":
            error = getattr(event.response, "error", None)
            message = getattr(error, "message", None) or "the response failed"
            raise ProviderError(message, provider="openai")
        elif kind == "error":
            raise ProviderError(getattr(event, "message", "stream error"), provider="openai")
    if final is None:
        raise ProviderError("the stream ended without a completed response", provider="openai")
    return parse_response(final)


def responses_usage(usage: Any) -> Usage:
    if usage is None:
        return Usage(requests=1)
    return Usage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=getattr(usage.input_tokens_details, "cached_tokens", None) or 0,
        reasoning_tokens=getattr(usage.output_tokens_details, "reasoning_tokens", None) or 0,
        requests=1,
    )
