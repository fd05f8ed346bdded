"""Claude models through the official ``anthropic`` SDK (Messages API)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from loom.core.messages import Message, ToolCall, Usage
from loom.providers._sdk_model import SDKModel
from loom.providers.base import (
    DeltaHandler,
    ModelRequest,
    ModelResponse,
    StopReason,
    StreamDelta,
    require_stop,
)
from loom.providers.retry import RetryPolicy
from loom.providers.wire_body import (
    ENTRY_OVERHEAD,
    Fragments,
    WireCache,
    dumps,
    json_array,
    spliced_body,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

DEFAULT_MAX_TOKENS = 8192
_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "model_context_window_exceeded": "context_window_exceeded",
}


class AnthropicModel(SDKModel):
    """A Claude model; the key and base URL default to the SDK's ``ANTHROPIC_*`` variables."""

    provider = "anthropic"
    client_class = "AsyncAnthropic"
    key_variables = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")

    def has_credentials(self, client: Any) -> bool:
        # anthropic 2.x builds a client without any and refuses each request; a profile or
        # workload identity resolves into ``credentials``.
        return bool(client.api_key or client.auth_token or getattr(client, "credentials", None))

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        thinking: int | Literal["adaptive"] | None = None,
        prompt_caching: bool = False,
        client: AsyncAnthropic | None = None,
    ) -> None:
        super().__init__(
            model, retry=retry, client=client, api_key=api_key, base_url=base_url, timeout=timeout
        )
        self.thinking = thinking
        self.prompt_caching = prompt_caching
        self._wire = WireCache(anthropic_blocks_json, _blocks_size)

    async def complete(
        self, request: ModelRequest, on_delta: DeltaHandler | None = None
    ) -> ModelResponse:
        params = self.request_params(request)
        if on_delta is not None:
            params["stream"] = True
        turns = anthropic_turns_json(await self._wire.values(request.messages))
        body = spliced_body(params, "messages", turns)

        async def attempt(deltas: DeltaHandler | None) -> Any:
            if deltas is None:
                return await self._post(body, stream=False)
            return await self._stream(body, deltas)

        return self.parse_message(await self.call(attempt, on_delta))

    def _raw_path(self) -> bool:
        """Whether the client takes a body as bytes: the Vertex and Bedrock clients rewrite
        the body's fields (the model goes into the URL), so they get the SDK's methods."""
        from anthropic import AsyncAnthropic

        return isinstance(self.client, AsyncAnthropic)

    async def _post(self, body: bytes, *, stream: bool) -> Any:
        # The body goes as bytes through ``client.post``, the path ``messages.create`` ends
        # in, without the SDK's copy of every argument: its auth, errors and stream types stay.
        from anthropic import AsyncStream
        from anthropic.types import Message as WireMessage
        from anthropic.types import RawMessageStreamEvent

        if not self._raw_path():
            return await self.client.messages.create(**sdk_arguments(body, stream=stream))
        return await self.client.post(
            "/v1/messages",
            content=body,
            cast_to=WireMessage,
            stream=stream,
            stream_cls=AsyncStream[RawMessageStreamEvent],
        )

    async def _stream(self, body: bytes, on_delta: DeltaHandler) -> Any:
        from anthropic.lib.streaming import AsyncMessageStreamManager

        tool_block: tuple[str | None, str | None] = (None, None)
        # The SDK's own stream helper, as ``messages.stream`` returns it (its events are read
        # by their ``type``, like the other providers' streams).
        manager: Any = (
            AsyncMessageStreamManager(self._post(body, stream=True))
            if self._raw_path()
            else self.client.messages.stream(**sdk_arguments(body, stream=False))
        )
        async with manager as stream:
            async for event in stream:
                kind = event.type
                if kind == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        tool_block = (block.id, block.name)
                elif kind == "text":
                    await on_delta(StreamDelta("text", event.text))
                elif kind == "thinking":
                    await on_delta(StreamDelta("thinking", event.thinking))
                elif kind == "input_json" and event.partial_json:
                    # Blocks stream one after another, so the last tool_use block started
                    # is the one this input belongs to.
                    await on_delta(StreamDelta("tool_input", event.partial_json, *tool_block))
            return await stream.get_final_message()

    # -- translation -------------------------------------------------------------------
    def request_params(self, request: ModelRequest) -> dict[str, Any]:
        generation = request.generation
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": generation.max_output_tokens or DEFAULT_MAX_TOKENS,
        }
        if request.instructions:
            system: dict[str, Any] = {"type": "text", "text": request.instructions}
            if self.prompt_caching:
                system["cache_control"] = {"type": "ephemeral"}
            params["system"] = [system]
        if request.tools:
            tools = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
            if self.prompt_caching:
                tools[-1]["cache_control"] = {"type": "ephemeral"}
            params["tools"] = tools
        if generation.stop:
            params["stop_sequences"] = list(generation.stop)
        thinking = generation.thinking_budget_tokens or self.thinking
        budget = thinking if isinstance(thinking, int) else None
        if thinking == "adaptive":
            params["thinking"] = {"type": "adaptive"}
        elif budget:
            params["thinking"] = {"type": "enabled", "budget_tokens": budget}
            params["max_tokens"] = max(params["max_tokens"], budget + 1024)
        extra: dict[str, Any] = dict(generation.extensions)
        # Sampling fields are no longer in the SDK's signature; sent only when asked for.
        if generation.temperature is not None and not thinking:
            extra["temperature"] = generation.temperature
        if generation.top_p is not None and not thinking:
            extra["top_p"] = generation.top_p
        if extra:
            params["extra_body"] = extra
        return params

    def parse_message(self, message: Any) -> ModelResponse:
        text_parts: list[str] = []
        calls: list[ToolCall] = []
        thinking: list[dict[str, Any]] = []
        for block in message.content:
            if block.type == "text":
                text_parts.append(block.text)
            elif block.type == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {}
                raw = None if isinstance(block.input, dict) else json.dumps(block.input)
                calls.append(ToolCall(block.id, block.name, dict(arguments), raw))
            elif block.type in ("thinking", "redacted_thinking"):
                thinking.append(block.model_dump(mode="json", exclude_none=True))
        usage = message.usage
        cache_read = usage.cache_read_input_tokens or 0
        cache_write = usage.cache_creation_input_tokens or 0
        return ModelResponse(
            text="".join(text_parts),
            tool_calls=tuple(calls),
            usage=Usage(
                input_tokens=usage.input_tokens + cache_read + cache_write,
                output_tokens=usage.output_tokens,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                requests=1,
            ),
            stop_reason=_STOP_REASONS.get(require_stop(message.stop_reason, "anthropic"), "other"),
            model=message.model or self.model,
            provider_data={"anthropic_thinking": thinking} if thinking else None,
        )


SDK_FIELDS = ("model", "max_tokens", "messages", "system", "tools", "stop_sequences", "thinking")
"""The request fields Loom sends that ``messages.create`` names; the rest go as extra_body."""


def sdk_arguments(body: bytes, *, stream: bool) -> dict[str, Any]:
    """The arguments of ``messages.create`` (or ``.stream``) that send ``body``."""
    fields = json.loads(body)
    fields.pop("stream", None)
    arguments = {name: fields.pop(name) for name in SDK_FIELDS if name in fields}
    if stream:
        arguments["stream"] = True
    if fields:
        arguments["extra_body"] = fields
    return arguments


def anthropic_blocks(message: Message) -> list[dict[str, Any]]:
    """The content blocks one transcript entry adds to its turn.

    Tool results become ``tool_result`` blocks of a user turn; adjacent user content is
    merged into one turn (``anthropic_turns_json``), so the turns alternate as the API expects.
    """
    if message.role == "user":
        return [{"type": "text", "text": message.content or " "}]
    if message.role == "tool":
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id,
            "content": message.content,
        }
        if message.is_error:
            result["is_error"] = True
        return [result]
    blocks: list[dict[str, Any]] = list((message.provider_data or {}).get("anthropic_thinking", ()))
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in message.tool_calls
    )
    return blocks


class Blocks(NamedTuple):
    """One message serialised: its blocks, and the turn it makes when alone in one."""

    role: bytes
    fragments: Fragments
    turn: bytes


def anthropic_blocks_json(message: Message) -> Blocks:
    blocks = anthropic_blocks(message)
    role = b"assistant" if message.role == "assistant" else b"user"
    fragments = tuple(dumps(block) for block in blocks)
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        # A turn of one text block goes as a plain string: the same request, and shorter.
        content = dumps(blocks[0]["text"])
    else:
        content = json_array(fragments)
    return Blocks(role, fragments, b'{"role":"' + role + b'","content":' + content + b"}")


def _blocks_size(blocks: Blocks) -> int:
    return sum(map(len, blocks.fragments)) + len(blocks.turn) + ENTRY_OVERHEAD


def anthropic_turns_json(messages: Iterable[Blocks]) -> bytes:
    """The ``messages`` array of a request from its messages' serialised blocks.

    Adjacent messages of one role make one turn; a turn of one message is that message's
    own ``turn``, and most are (assistant and tool turns alternate)."""
    turns: list[bytes] = []
    group: list[Blocks] = []  # the messages of the turn being gathered
    for blocks in messages:
        if not blocks.fragments:
            continue
        if group and blocks.role != group[0].role:
            turns.append(group[0].turn if len(group) == 1 else _merged_turn(group))
            group = []
        group.append(blocks)
    if group:
        turns.append(group[0].turn if len(group) == 1 else _merged_turn(group))
    return json_array(turns)


def _merged_turn(group: Sequence[Blocks]) -> bytes:
    content = json_array(piece for blocks in group for piece in blocks.fragments)
    return b'{"role":"' + group[0].role + b'","content":' + content + b"}"
