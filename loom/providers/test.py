"""Offline models: ``TestModel`` (deterministic) and ``FunctionModel`` (scripted).

They make agent tests exact and need no network; ``loom run`` falls back to ``TestModel``
when no provider key is configured.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from loom.core.messages import Message, ToolCall, Usage
from loom.providers.base import (
    DeltaHandler,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    StreamDelta,
)

FunctionModelFn = Callable[[ModelRequest], "ModelResponse | str | Awaitable[ModelResponse | str]"]


def estimate_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return (len(text) + 3) // 4


def _request_tokens(request: ModelRequest) -> int:
    # The loop keeps context_chars current, so this stays O(1) however long the history.
    chars = request.context_chars or sum(len(m.content) for m in request.messages)
    return estimate_tokens(request.instructions) + (chars + 3) // 4


def _tool_results_of_turn(messages: Sequence[Message]) -> list[Message]:
    """Tool results since the last user message: what this run's tools returned so far."""
    results: list[Message] = []
    for message in reversed(messages):
        if message.role == "user":
            break
        if message.role == "tool":
            results.append(message)
    results.reverse()
    return results


class TestModel(ModelProvider):
    """Calls every offered tool once with schema-valid arguments, then summarises.

    ``call_tools`` limits which tools are called ("all", or a list of names, or ``[]``);
    ``output_text`` replaces the summary with a fixed answer.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        *,
        call_tools: Literal["all"] | Sequence[str] = "all",
        output_text: str | None = None,
    ) -> None:
        self.name = "test"
        self.call_tools = call_tools
        self.output_text = output_text

    async def complete(
        self, request: ModelRequest, on_delta: DeltaHandler | None = None
    ) -> ModelResponse:
        input_tokens = _request_tokens(request)
        results = _tool_results_of_turn(request.messages)
        if not results:
            calls = self._tool_calls(request)
            if calls:
                return ModelResponse.of_tool_calls(
                    *calls,
                    usage=Usage(
                        input_tokens=input_tokens, output_tokens=8 * len(calls), requests=1
                    ),
                    model="test",
                )
        text = self.output_text if self.output_text is not None else _summary(request, results)
        if on_delta is not None:
            for chunk in _chunks(text):
                await on_delta(StreamDelta("text", chunk))
        return ModelResponse(
            text=text,
            usage=Usage(input_tokens=input_tokens, output_tokens=estimate_tokens(text), requests=1),
            model="test",
        )

    def _tool_calls(self, request: ModelRequest) -> list[ToolCall]:
        wanted = None if self.call_tools == "all" else set(self.call_tools)
        return [
            ToolCall(
                id=f"call_{request.run_id[-12:]}_{request.iteration}_{index}",
                name=definition.name,
                arguments=example_arguments(definition.parameters),
            )
            for index, definition in enumerate(request.tools)
            if wanted is None or definition.name in wanted
        ]


def _summary(request: ModelRequest, results: Sequence[Message]) -> str:
    text = f"test model reply to {_quoted(request.last_user_text())}"
    if results:
        shown = "; ".join(
            f"{m.tool_name} {'failed' if m.is_error else 'returned'} {_quoted(m.content)}"
            for m in results
        )
        text += f"; tools: {shown}"
    return text


def _quoted(text: str) -> str:
    """``text`` quoted as ``repr`` quotes it, but with its line breaks kept: the reply is read
    by people (in a Slack thread, say), where ``\\n`` would show as two characters."""
    lines = text.split("\n")
    if len(lines) == 1:
        return repr(text)
    return "'" + "\n".join(repr(line)[1:-1] for line in lines) + "'"


def _chunks(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def example_arguments(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy a tool's JSON schema: every required property, simplest value."""
    value = _example(schema, schema.get("$defs", {}))
    return value if isinstance(value, dict) else {}


def _example(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    if "$ref" in schema:
        return _example(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return _example(options[0], defs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties: Mapping[str, Any] = schema.get("properties", {})
        return {name: _example(properties[name], defs) for name in schema.get("required", [])}
    # Common constraints (datetime, UUID, bounded numbers, min lengths) must hold too, or
    # the tool would reject the "schema-valid" arguments; regex patterns are not attempted.
    if kind == "string":
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        length = max(schema.get("minLength", 1), 1)
        return "a" * min(length, schema.get("maxLength", length))
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "array":
        if "prefixItems" in schema:
            return [_example(item, defs) for item in schema["prefixItems"]]
        return [_example(schema.get("items", {}), defs)] * schema.get("minItems", 0)
    return _SIMPLE.get(kind, "example") if isinstance(kind, str) else "example"


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    """Zero if the bounds allow it, else the allowed value nearest to zero."""
    open_low, open_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    low = schema.get("minimum", None if open_low is None else math.floor(open_low) + 1)
    high = schema.get("maximum", None if open_high is None else math.ceil(open_high) - 1)
    if not integer and low is not None and high is not None and low > high:
        return float(schema.get("minimum", open_low) + schema.get("maximum", open_high)) / 2
    value = 0 if low is None else max(0, math.ceil(low) if integer else low)
    if high is not None:
        value = min(value, math.floor(high) if integer else high)
    step = schema.get("multipleOf")
    if integer and isinstance(step, int) and step > 0 and value % step:
        value += step - value % step
    return int(value) if integer else float(value)


_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "duration": "PT0S",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}


_SIMPLE: dict[str, Any] = {
    "string": "a",
    "integer": 0,
    "number": 0.0,
    "boolean": False,
    "array": [],
    "null": None,
}


class FunctionModel(ModelProvider):
    """Lets a function play the model: it gets each ``ModelRequest`` and returns the turn.

    The function may be sync or async and may return a ``ModelResponse`` or plain text.
    """

    def __init__(self, fn: FunctionModelFn, *, name: str | None = None) -> None:
        self.fn = fn
        self.name = f"function:{name or getattr(fn, '__name__', 'fn')}"

    async def complete(
        self, request: ModelRequest, on_delta: DeltaHandler | None = None
    ) -> ModelResponse:
        outcome = self.fn(request)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if isinstance(outcome, str):
            outcome = ModelResponse(text=outcome)
        if not isinstance(outcome, ModelResponse):
            raise TypeError(
                f"{self.name} returned {type(outcome).__name__}; expected ModelResponse or str"
            )
        if outcome.usage.total_tokens == 0:
            # Scripted turns rarely state usage; estimate it so usage figures stay meaningful.
            outcome.usage = Usage(
                input_tokens=_request_tokens(request),
                output_tokens=estimate_tokens(outcome.text)
                + estimate_tokens(json.dumps([c.arguments for c in outcome.tool_calls])),
            )
        outcome.usage.requests = max(outcome.usage.requests, 1)
        if on_delta is not None and outcome.text:
            await on_delta(StreamDelta("text", outcome.text))
        return outcome
