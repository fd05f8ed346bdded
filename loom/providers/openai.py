"""GPT and OpenAI-compatible models through the official ``openai`` SDK.

Chat Completions by default (what vLLM, Ollama and LiteLLM speak); the Responses API with
``api="responses"``. Reasoning models get ``max_completion_tokens`` and no sampling fields.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Literal
from urllib.parse import quote

from loom.core.messages import Message, Usage
from loom.errors import ProviderError
from loom.providers._sdk_model import SDKModel
from loom.providers.base import (
    DeltaHandler,
    ModelRequest,
    ModelResponse,
    StopReason,
    StreamDelta,
    require_stop,
    tool_call_from_json,
)
from loom.providers.openai_responses import (
    parse_response,
    responses_params,
    stream_response,
    to_response_input,
)
from loom.providers.retry import RetryPolicy
from loom.providers.wire_body import Fragments, array_of, dumps, fragments_cache, spliced_body

logger = logging.getLogger("loom.providers")
PATH_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
"""What a URL path segment holds unescaped (RFC 3986 ``pchar``)."""

REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
_FINISH_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


class OpenAIModel(SDKModel):
    """An OpenAI (or OpenAI-compatible) model; key and URL default to ``OPENAI_*`` variables."""

    provider = "openai"
    client_class = "AsyncOpenAI"
    key_variables = ("OPENAI_API_KEY",)

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        api: Literal["chat", "responses"] = "chat",
        reasoning: bool | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(
            model,
            retry=retry,
            client=client,
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            timeout=timeout,
        )
        self.api = api
        self.reasoning = bool(REASONING_MODEL.match(model)) if reasoning is None else reasoning
        self._wire = fragments_cache(
            response_items_json if api == "responses" else chat_message_json
        )

    async def complete(
        self, request: ModelRequest, on_delta: DeltaHandler | None = None
    ) -> ModelResponse:
        streaming = on_delta is not None
        wire = await self._wire.values(request.messages)
        if self.api == "responses":
            params = responses_params(self.model, request, reasoning=self.reasoning)
            if streaming:
                params["stream"] = True
            body = spliced_body(params, "input", array_of(wire))
        else:
            params = self.chat_params(request)
            if streaming:  # with usage in the last chunk
                params.update(stream=True, stream_options={"include_usage": True})
            body = spliced_body(params, "messages", self._chat_messages(request, wire))

        async def attempt(deltas: DeltaHandler | None) -> ModelResponse:
            if self.api == "responses":
                if deltas is None:
                    return parse_response(await self._post_responses(body, stream=False))
                return await stream_response(await self._post_responses(body, stream=True), deltas)
            if deltas is None:
                return self.parse_chat(await self._post_chat(body, stream=False))
            return await self._stream_chat(body, deltas)

        return await self.call(attempt, on_delta)

    # -- the raw request path ------------------------------------------------------------
    # The body goes as bytes through ``client.post``, the path the SDK's own methods end in:
    # the client's auth (``security`` as its methods set it), errors and stream types stay.
    async def _post_chat(self, body: bytes, *, stream: bool) -> Any:
        from openai import AsyncStream
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        return await self.client.post(
            self._chat_path(),
            content=body,
            cast_to=ChatCompletion,
            options={"security": {"bearer_auth": True}},
            stream=stream,
            stream_cls=AsyncStream[ChatCompletionChunk],
        )

    def _chat_path(self) -> str:
        """``/chat/completions``; on an Azure client without a deployment in its URL, that
        of the model's deployment, as its ``chat.completions.create`` would route it (the
        client reads the model from a body it is not given here)."""
        from openai import AsyncAzureOpenAI

        client = self.client
        if isinstance(client, AsyncAzureOpenAI) and "/deployments" not in client.base_url.path:
            return f"/deployments/{quote(self.model, safe=PATH_SEGMENT_SAFE)}/chat/completions"
        return "/chat/completions"

    async def _post_responses(self, body: bytes, *, stream: bool) -> Any:
        from openai import AsyncStream
        from openai.types.responses import Response, ResponseStreamEvent

        return await self.client.post(
            "/responses",
            content=body,
            cast_to=Response,
            options={"security": {"bearer_auth": True}},
            stream=stream,
            stream_cls=AsyncStream[ResponseStreamEvent],
        )

    def _chat_messages(self, request: ModelRequest, wire: list[Fragments]) -> bytes:
        system = (
            (dumps({"role": "system", "content": request.instructions}),)
            if request.instructions
            else ()
        )
        return array_of(wire, system)

    # -- chat completions --------------------------------------------------------------
    def chat_params(self, request: ModelRequest) -> dict[str, Any]:
        generation = request.generation
        params: dict[str, Any] = {
            "model": self.model,
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if generation.max_output_tokens is not None:
            params["max_completion_tokens"] = generation.max_output_tokens
        if generation.stop:
            params["stop"] = list(generation.stop)
        if self.reasoning:
            if generation.reasoning_effort:
                params["reasoning_effort"] = generation.reasoning_effort
            if generation.temperature is not None or generation.top_p is not None:
                logger.debug("%s is a reasoning model: temperature and top_p not sent", self.name)
        else:
            if generation.temperature is not None:
                params["temperature"] = generation.temperature
            if generation.top_p is not None:
                params["top_p"] = generation.top_p
        if generation.extensions:
            params["extra_body"] = dict(generation.extensions)
        return params

    def parse_chat(self, completion: Any) -> ModelResponse:
        if not completion.choices:
            raise ProviderError("the response had no choices", provider="openai")
        choice = completion.choices[0]
        message = choice.message
        calls = tuple(
            tool_call_from_json(c.id, c.function.name, c.function.arguments or "")
            for c in message.tool_calls or ()
            if getattr(c, "function", None) is not None
        )
        stop = _FINISH_REASONS.get(require_stop(choice.finish_reason, "openai"), "other")
        if getattr(message, "refusal", None):
            stop = "refusal"
        return ModelResponse(
            text=message.content or getattr(message, "refusal", None) or "",
            tool_calls=calls,
            usage=chat_usage(completion.usage),
            stop_reason=stop,
            model=completion.model or self.model,
        )

    async def _stream_chat(self, body: bytes, on_delta: DeltaHandler) -> ModelResponse:
        stream = await self._post_chat(body, stream=True)
        text: list[str] = []
        refusal: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        usage: Any = None
        model = self.model
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                    await on_delta(StreamDelta("text", delta.content))
                if getattr(delta, "refusal", None):
                    refusal.append(delta.refusal)
                for call in delta.tool_calls or ():
                    slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    function = call.function
                    if call.id:
                        slot["id"] = call.id
                    if function is not None and function.name:
                        slot["name"] = function.name
                    if function is not None and function.arguments:
                        slot["arguments"] += function.arguments
                        await on_delta(
                            StreamDelta("tool_input", function.arguments, slot["id"], slot["name"])
                        )
                if choice.finish_reason:
                    finish = choice.finish_reason
        stop = _FINISH_REASONS.get(require_stop(finish, "openai"), "other")
        if refusal:
            stop = "refusal"
        return ModelResponse(
            text="".join(text) or "".join(refusal),
            tool_calls=tuple(
                tool_call_from_json(c["id"], c["name"], c["arguments"])
                for _, c in sorted(calls.items())
            ),
            usage=chat_usage(usage),
            stop_reason=stop,
            model=model,
        )


def chat_usage(usage: Any) -> Usage:
    if usage is None:
        return Usage(requests=1)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    output_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cache_read_tokens=getattr(prompt_details, "cached_tokens", None) or 0,
        reasoning_tokens=getattr(output_details, "reasoning_tokens", None) or 0,
        requests=1,
    )


def chat_message(message: Message) -> dict[str, Any]:
    """One transcript entry as a Chat Completions message."""
    if message.role == "user":
        return {"role": "user", "content": message.content}
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    # Content may be null only beside tool calls ("required unless tool_calls").
    content = message.content or (None if message.tool_calls else "")
    entry: dict[str, Any] = {"role": "assistant", "content": content}
    if message.tool_calls:
        entry["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.raw_arguments
                    if call.raw_arguments is not None
                    else json.dumps(call.arguments),
                },
            }
            for call in message.tool_calls
        ]
    return entry


def chat_message_json(message: Message) -> Fragments:
    return (dumps(chat_message(message)),)


def response_items_json(message: Message) -> Fragments:
    return tuple(dumps(item) for item in to_response_input((message,)))
