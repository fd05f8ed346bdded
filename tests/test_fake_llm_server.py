"""The fake LLM server speaks the real wire formats: the official SDKs parse every builder."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import anthropic
import httpx
import openai
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from tests.fakes.llm_server import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    FakeLLMServer,
    FakeReply,
    RecordedRequest,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    anthropic_stream_error,
    encode_sse,
    openai_chat,
    openai_chat_stream,
    openai_error,
    openai_response,
    openai_response_stream,
)
from tests.fakes.openai_wire import ToolCall

pytest_plugins = ["tests.fakes.llm_server"]

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
CLAUDE = "claude-sonnet-4-6"  # the SDK warns on requests for -4-5 (deprecated)
GPT = "gpt-5.1"
WEATHER_INPUT = {"city": "Paris", "units": "metric", "days": [1, 2, 3]}


@pytest.fixture(autouse=True)
def _no_leaked_server_threads() -> Iterator[None]:
    # Autouse fixtures are set up first, so this teardown runs after `fake_llm` stopped.
    yield
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("fake-llm-server")]
    assert not leaked, f"server threads still running: {leaked}"


def anthropic_client(server: FakeLLMServer, **options: Any) -> anthropic.AsyncAnthropic:
    options.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="test-key", **options
    )


def openai_client(server: FakeLLMServer, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test-key", **options)


def _data(events: list[tuple[str | None, Mapping[str, Any] | str]]) -> list[Mapping[str, Any]]:
    return [data for _, data in events if not isinstance(data, str)]


# ----------------------------------------------------------------------------------- builders
# The SDKs parse leniently (construct without validation); validating against their pydantic
# types catches a wrong field name or type that lenient parsing would let through.


def test_anthropic_builders_validate_against_sdk_types() -> None:
    Message.model_validate(anthropic_message("hi"))
    Message.model_validate(
        anthropic_message("hi", tool_uses=[("toolu_1", "weather", WEATHER_INPUT)], thinking="hmm")
    )
    Message.model_validate(anthropic_message(stop_reason="refusal"))
    adapter = pydantic.TypeAdapter(RawMessageStreamEvent)
    events = anthropic_stream(
        "hello", tool_uses=[("toolu_1", "weather", WEATHER_INPUT)], thinking="hmm"
    )
    for name, data in events:
        assert not isinstance(data, str)
        assert name == data["type"]  # the SDK drops events without an `event:` name
        if name != "ping":
            adapter.validate_python(data)
    error = anthropic_error(401, message="bad key")
    assert error["type"] == "error"
    assert error["error"] == {"type": "authentication_error", "message": "bad key"}


def test_openai_builders_validate_against_sdk_types() -> None:
    calls: list[ToolCall] = [
        ("call_1", "weather", json.dumps(WEATHER_INPUT)),
        ("call_2", "time", {"tz": "UTC"}),
    ]
    ChatCompletion.model_validate(openai_chat("hi"))
    ChatCompletion.model_validate(openai_chat(tool_calls=calls))
    events = openai_chat_stream("hello", tool_calls=calls)
    assert events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in events)
    for chunk in _data(events):
        ChatCompletionChunk.model_validate(chunk)

    Response.model_validate(openai_response("hi", function_calls=calls))
    Response.model_validate(openai_response("partial", status="incomplete"))
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    response_events = openai_response_stream("hello", function_calls=calls)
    assert [data["sequence_number"] for data in _data(response_events)] == list(
        range(len(response_events))
    )
    for name, data in response_events:
        assert not isinstance(data, str)
        assert name == data["type"]
        adapter.validate_python(data)
    assert openai_error(401, "bad key") == {
        "error": {
            "message": "bad key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def test_sse_framing() -> None:
    anthropic_bytes = b"".join(encode_sse(anthropic_stream("hi")))
    assert anthropic_bytes.startswith(b'event: message_start\ndata: {"type":"message_start"')
    assert anthropic_bytes.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    chat_bytes = b"".join(encode_sse(openai_chat_stream("hi")))
    assert chat_bytes.startswith(b'data: {"id":"chatcmpl-')
    assert chat_bytes.endswith(b"\n\ndata: [DONE]\n\n")
    assert b"event:" not in chat_bytes
    responses_bytes = b"".join(encode_sse(openai_response_stream("hi")))
    assert responses_bytes.startswith(b"event: response.created\ndata: {")
    assert b"[DONE]" not in responses_bytes


# ----------------------------------------------------------------------------------- anthropic


async def test_anthropic_create_text(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message(
            "Hello there",
            model=CLAUDE,
            usage={
                "input_tokens": 12,
                "output_tokens": 3,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 7,
            },
        ),
    )
    async with anthropic_client(fake_llm) as client:
        message = await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)

    assert isinstance(message, Message)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello there"
    assert message.stop_reason == "end_turn"
    assert message.model == CLAUDE
    assert message.usage.input_tokens == 12
    assert message.usage.output_tokens == 3
    assert message.usage.cache_read_input_tokens == 100
    assert message.usage.cache_creation_input_tokens == 7

    [request] = fake_llm.requests
    assert request.route == "/v1/messages"
    assert request.api_key == "test-key"
    assert request.headers["authorization"] == "Bearer test-key"  # anthropic 2.x: no x-api-key
    assert "anthropic-version" in request.headers
    assert request.json["model"] == CLAUDE
    assert request.json["messages"] == MESSAGES
    assert request.json["max_tokens"] == 64


async def test_anthropic_create_tool_use(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        "messages",
        anthropic_message(
            "Let me check.",
            tool_uses=[
                ("toolu_01", "weather", WEATHER_INPUT),
                ("toolu_02", "clock", {}),
            ],
        ),
    )
    async with anthropic_client(fake_llm) as client:
        message = await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)

    assert message.stop_reason == "tool_use"
    tool_uses = [block for block in message.content if block.type == "tool_use"]
    assert [(block.id, block.name, block.input) for block in tool_uses] == [
        ("toolu_01", "weather", WEATHER_INPUT),
        ("toolu_02", "clock", {}),
    ]


async def test_anthropic_stream_helper_accumulates(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_stream(
            "The weather is fine.",
            tool_uses=[("toolu_01", "weather", WEATHER_INPUT)],
            thinking="I should look it up.",
            signature="sig-123",
            usage={"input_tokens": 20, "output_tokens": 42, "cache_read_input_tokens": 5},
        ),
    )
    async with (
        anthropic_client(fake_llm) as client,
        client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream,
    ):
        kinds: list[str] = []
        text = ""
        async for event in stream:
            kinds.append(event.type)
            if event.type == "text":
                text += event.text
        final = await stream.get_final_message()

    assert text == "The weather is fine."
    assert kinds.count("text") == 3
    assert "thinking" in kinds
    assert "signature" in kinds
    assert kinds.count("input_json") == 4  # the leading "" fragment, then three pieces
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    thinking, text_block, tool_use = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "I should look it up."
    assert thinking.signature == "sig-123"
    assert text_block.type == "text"
    assert text_block.text == "The weather is fine."
    assert tool_use.type == "tool_use"
    assert (tool_use.id, tool_use.name, tool_use.input) == ("toolu_01", "weather", WEATHER_INPUT)
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 20
    assert final.usage.output_tokens == 42
    assert final.usage.cache_read_input_tokens == 5
    assert fake_llm.requests[0].json["stream"] is True


async def test_anthropic_text_stream(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(ANTHROPIC_MESSAGES, anthropic_stream("abcdefghij", fragments=5))
    async with (
        anthropic_client(fake_llm) as client,
        client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream,
    ):
        pieces = [piece async for piece in stream.text_stream]
        assert await stream.get_final_text() == "abcdefghij"
    assert pieces == ["ab", "cd", "ef", "gh", "ij"]


async def test_anthropic_create_stream_raw_events(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_stream(
            "Hi!", tool_uses=[("toolu_01", "weather", {"city": "Oslo"})], stop_reason="max_tokens"
        ),
    )
    async with anthropic_client(fake_llm) as client:
        stream = await client.messages.create(
            model=CLAUDE, max_tokens=64, messages=MESSAGES, stream=True
        )
        events = [event async for event in stream]

    types = [event.type for event in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in types  # the SDK skips `event: ping`
    starts = [event for event in events if event.type == "content_block_start"]
    assert [event.content_block.type for event in starts] == ["text", "tool_use"]
    deltas = [event for event in events if event.type == "content_block_delta"]
    text = "".join(event.delta.text for event in deltas if event.delta.type == "text_delta")
    partial = "".join(
        event.delta.partial_json for event in deltas if event.delta.type == "input_json_delta"
    )
    assert text == "Hi!"
    assert json.loads(partial) == {"city": "Oslo"}
    start = events[0]
    assert start.type == "message_start"
    assert start.message.stop_reason is None
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens"
    assert delta.usage.output_tokens == 5


async def test_anthropic_error_event_mid_stream(fake_llm: FakeLLMServer) -> None:
    events = anthropic_stream("Hello world")
    fake_llm.script(ANTHROPIC_MESSAGES, [*events[:4], anthropic_stream_error()])
    async with (
        anthropic_client(fake_llm) as client,
        client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream,
    ):
        with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
            await stream.get_final_message()


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (403, anthropic.PermissionDeniedError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
async def test_anthropic_error_mapping(
    fake_llm: FakeLLMServer, status: int, error_class: type[anthropic.APIStatusError]
) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES, FakeReply(status=status, json=anthropic_error(status, message="nope"))
    )
    async with anthropic_client(fake_llm) as client:
        with pytest.raises(error_class) as caught:
            await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    assert caught.value.status_code == status
    assert caught.value.api_message == "nope"
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")


async def test_anthropic_401(fake_llm: FakeLLMServer) -> None:
    body = anthropic_error(401, "authentication_error", "invalid x-api-key", request_id="req_1")
    fake_llm.script(ANTHROPIC_MESSAGES, FakeReply(status=401, json=body))
    async with anthropic_client(fake_llm) as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    assert caught.value.type == "authentication_error"
    assert caught.value.api_message == "invalid x-api-key"
    assert caught.value.body == body


async def test_anthropic_retries_429_then_succeeds(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        FakeReply(status=429, json=anthropic_error(429), headers={"retry-after": "0"}),
        anthropic_message("finally"),
    )
    async with anthropic_client(fake_llm, max_retries=1) as client:
        message = await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)

    assert message.content[0].type == "text"
    assert message.content[0].text == "finally"
    assert len(fake_llm.requests) == 2
    assert [r.headers["x-stainless-retry-count"] for r in fake_llm.requests] == ["0", "1"]
    assert fake_llm.pending() == 0


# ----------------------------------------------------------------------------------- openai chat


async def test_openai_chat_text(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat(
            "Hello there",
            usage={
                "prompt_tokens": 30,
                "completion_tokens": 9,
                "cached_tokens": 16,
                "reasoning_tokens": 4,
            },
        ),
    )
    async with openai_client(fake_llm) as client:
        completion = await client.chat.completions.create(model=GPT, messages=MESSAGES)

    choice = completion.choices[0]
    assert choice.message.content == "Hello there"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 30
    assert completion.usage.completion_tokens == 9
    assert completion.usage.total_tokens == 39
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 16
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 4

    [request] = fake_llm.requests
    assert request.route == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.api_key == "test-key"
    assert request.json["model"] == GPT


async def test_openai_chat_parallel_tool_calls(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        "chat",
        openai_chat(
            tool_calls=[
                ("call_1", "weather", json.dumps(WEATHER_INPUT)),
                ("call_2", "clock", {"tz": "UTC"}),
            ]
        ),
    )
    async with openai_client(fake_llm) as client:
        completion = await client.chat.completions.create(model=GPT, messages=MESSAGES)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    calls = [
        (call.id, call.function.name, json.loads(call.function.arguments))
        for call in choice.message.tool_calls
        if call.type == "function"
    ]
    assert calls == [("call_1", "weather", WEATHER_INPUT), ("call_2", "clock", {"tz": "UTC"})]


async def test_openai_chat_stream_with_usage(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat_stream(
            "Checking both.",
            tool_calls=[
                ("call_1", "weather", json.dumps(WEATHER_INPUT)),
                ("call_2", "clock", '{"tz": "UTC"}'),
            ],
            usage={"prompt_tokens": 11, "completion_tokens": 22, "cached_tokens": 3},
        ),
    )
    async with openai_client(fake_llm) as client:
        stream = await client.chat.completions.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]

    assert fake_llm.requests[0].json["stream_options"] == {"include_usage": True}
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (11, 22)
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 3
    assert all(chunk.usage is None for chunk in body)
    assert body[0].choices[0].delta.role == "assistant"
    assert body[-1].choices[0].finish_reason == "tool_calls"
    content = "".join(chunk.choices[0].delta.content or "" for chunk in body)
    assert content == "Checking both."
    calls: dict[int, dict[str, str]] = {}
    for chunk in body:
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            assert delta.function is not None
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert calls == {
        0: {"id": "call_1", "name": "weather", "arguments": json.dumps(WEATHER_INPUT)},
        1: {"id": "call_2", "name": "clock", "arguments": '{"tz": "UTC"}'},
    }


async def test_openai_chat_stream_helper(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat_stream(
            "Sure.",
            tool_calls=[("call_1", "weather", {"city": "Rome"}), ("call_2", "clock", {})],
            usage={"prompt_tokens": 5, "completion_tokens": 6},
        ),
    )
    async with (
        openai_client(fake_llm) as client,
        client.chat.completions.stream(
            model=GPT, messages=MESSAGES, stream_options={"include_usage": True}
        ) as stream,
    ):
        done = [event async for event in stream if event.type.endswith(".done")]
        final = await stream.get_final_completion()

    assert [event.type for event in done] == [
        "content.done",
        "tool_calls.function.arguments.done",
        "tool_calls.function.arguments.done",
    ]
    message = final.choices[0].message
    assert message.content == "Sure."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_1", "weather", '{"city": "Rome"}'),
        ("call_2", "clock", "{}"),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert final.usage.total_tokens == 11


# ----------------------------------------------------------------------------------- responses


async def test_openai_responses_create(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        openai_response(
            "Here you go.",
            function_calls=[("call_9", "weather", json.dumps(WEATHER_INPUT))],
            usage={
                "input_tokens": 40,
                "output_tokens": 8,
                "cached_tokens": 32,
                "reasoning_tokens": 2,
            },
        ),
    )
    async with openai_client(fake_llm) as client:
        response = await client.responses.create(model=GPT, input="hi")

    assert response.status == "completed"
    assert response.output_text == "Here you go."
    assert [item.type for item in response.output] == ["message", "function_call"]
    call = response.output[1]
    assert call.type == "function_call"
    assert (call.call_id, call.name, json.loads(call.arguments)) == (
        "call_9",
        "weather",
        WEATHER_INPUT,
    )
    assert response.usage is not None
    assert response.usage.input_tokens == 40
    assert response.usage.input_tokens_details.cached_tokens == 32
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    assert fake_llm.requests[0].route == "/v1/responses"
    assert fake_llm.requests[0].json["input"] == "hi"


async def test_openai_responses_incomplete(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_RESPONSES, openai_response("cut sh", status="incomplete"))
    async with openai_client(fake_llm) as client:
        response = await client.responses.create(model=GPT, input="hi")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "cut sh"


async def test_openai_responses_create_stream_raw(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        openai_response_stream("Hello!", function_calls=[("call_1", "clock", "{}")]),
    )
    async with openai_client(fake_llm) as client:
        stream = await client.responses.create(model=GPT, input="hi", stream=True)
        events = [event async for event in stream]

    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert types.count("response.output_item.added") == 2
    assert types.count("response.output_item.done") == 2
    assert "response.function_call_arguments.delta" in types
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == "Hello!"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "Hello!"
    assert completed.response.usage is not None


async def test_openai_responses_stream_helper(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        openai_response_stream(
            "Looking up.",
            function_calls=[("call_1", "weather", {"city": "Lima"}), ("call_2", "clock", {})],
            usage={"input_tokens": 7, "output_tokens": 9},
        ),
    )
    async with (
        openai_client(fake_llm) as client,
        client.responses.stream(model=GPT, input="hi") as stream,
    ):
        snapshots = [
            event.snapshot async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()

    assert snapshots == ["Look", "Looking ", "Looking up."]
    assert final.output_text == "Looking up."
    calls = [
        (item.call_id, item.name, item.arguments)
        for item in final.output
        if item.type == "function_call"
    ]
    assert calls == [("call_1", "weather", '{"city": "Lima"}'), ("call_2", "clock", "{}")]
    assert final.usage is not None
    assert final.usage.total_tokens == 16


async def test_openai_responses_stream_incomplete(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_RESPONSES, openai_response_stream("cut", status="incomplete"))
    async with openai_client(fake_llm) as client:
        stream = await client.responses.create(model=GPT, input="hi", stream=True)
        events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.output_text == "cut"


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
async def test_openai_error_mapping(
    fake_llm: FakeLLMServer, status: int, error_class: type[openai.APIStatusError]
) -> None:
    fake_llm.script(OPENAI_CHAT, FakeReply(status=status, json=openai_error(status, "nope")))
    async with openai_client(fake_llm) as client:
        with pytest.raises(error_class) as caught:
            await client.chat.completions.create(model=GPT, messages=MESSAGES)
    assert caught.value.status_code == status
    assert caught.value.request_id is not None


async def test_openai_401(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        FakeReply(status=401, json=openai_error(401, "Incorrect API key provided: test-key.")),
    )
    async with openai_client(fake_llm) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.responses.create(model=GPT, input="hi")
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    assert caught.value.message.startswith("Error code: 401")
    assert caught.value.body == openai_error(401, "Incorrect API key provided: test-key.")["error"]


async def test_openai_retries_429_then_succeeds(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        # `retry-after: 0` is not "now": the SDKs only honour values > 0 and otherwise back off
        # ~0.5 s; `retry-after-ms: 1` makes the retry immediate.
        FakeReply(status=429, json=openai_error(429, "slow down"), headers={"retry-after-ms": "1"}),
        openai_chat("ok"),
    )
    async with openai_client(fake_llm, max_retries=1) as client:
        completion = await client.chat.completions.create(model=GPT, messages=MESSAGES)
    assert completion.choices[0].message.content == "ok"
    assert len(fake_llm.requests_to("chat")) == 2


# ----------------------------------------------------------------------------------- server


async def test_unscripted_request_fails_loudly_without_retries(fake_llm: FakeLLMServer) -> None:
    async with anthropic_client(fake_llm, max_retries=3) as client:
        with pytest.raises(anthropic.InternalServerError, match="no scripted response"):
            await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    async with openai_client(fake_llm, max_retries=3) as client:
        with pytest.raises(openai.InternalServerError, match="no scripted response"):
            await client.responses.create(model=GPT, input="hi")
    assert len(fake_llm.requests) == 2  # `x-should-retry: false` stopped the retries
    assert fake_llm.problems == [
        "no scripted response for POST /v1/messages",
        "no scripted response for POST /v1/responses",
    ]
    fake_llm.problems.clear()  # expected here; otherwise the fixture fails the test


async def test_stream_flag_mismatch_is_a_problem(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_CHAT, openai_chat("not a stream"))
    async with openai_client(fake_llm) as client:
        with pytest.raises(openai.InternalServerError, match="JSON reply scripted"):
            await client.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)
    assert fake_llm.problems == ["JSON reply scripted for a stream=true POST /v1/chat/completions"]
    fake_llm.problems.clear()


async def test_callable_reply_sees_the_request(fake_llm: FakeLLMServer) -> None:
    def echo(request: RecordedRequest) -> dict[str, Any]:
        return openai_chat(request.json["messages"][-1]["content"].upper())

    fake_llm.script("chat", echo, echo)
    async with openai_client(fake_llm) as client:
        first = await client.chat.completions.create(model=GPT, messages=MESSAGES)
        second = await client.chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": "again"}]
        )
    assert first.choices[0].message.content == "HI"
    assert second.choices[0].message.content == "AGAIN"


async def test_routes_have_separate_queues(fake_llm: FakeLLMServer) -> None:
    fake_llm.script("responses", openai_response("from responses"))
    fake_llm.script("chat", openai_chat("from chat"))
    assert fake_llm.pending() == 2
    assert fake_llm.pending("responses") == 1
    async with openai_client(fake_llm) as client:
        chat = await client.chat.completions.create(model=GPT, messages=MESSAGES)
        response = await client.responses.create(model=GPT, input="hi")
    assert chat.choices[0].message.content == "from chat"
    assert response.output_text == "from responses"
    assert [r.route for r in fake_llm.requests] == ["/v1/chat/completions", "/v1/responses"]


def test_script_rejects_unknown_routes_and_replies(fake_llm: FakeLLMServer) -> None:
    with pytest.raises(ValueError, match="unknown route"):
        fake_llm.script("/v1/completions", openai_chat("x"))
    with pytest.raises(TypeError, match="not a scripted reply"):
        fake_llm.script("chat", 42)  # type: ignore[arg-type]


async def test_raw_http_framing(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(ANTHROPIC_MESSAGES, anthropic_stream("hi"))
    fake_llm.script(OPENAI_CHAT, openai_chat_stream("hi"))
    async with httpx.AsyncClient(base_url=fake_llm.url) as http:
        anthropic_reply = await http.post("/v1/messages", json={"stream": True})
        chat_reply = await http.post("/v1/chat/completions", json={"stream": True})
    assert anthropic_reply.headers["content-type"].startswith("text/event-stream")
    assert anthropic_reply.headers["request-id"].startswith("req_")
    assert anthropic_reply.text.startswith("event: message_start\ndata: {")
    assert 'event: ping\ndata: {"type":"ping"}\n\n' in anthropic_reply.text
    assert chat_reply.headers["x-request-id"].startswith("req_")
    assert chat_reply.text.endswith("data: [DONE]\n\n")


async def test_delayed_reply_times_out_and_server_still_stops_promptly() -> None:
    with FakeLLMServer() as server:
        server.script(ANTHROPIC_MESSAGES, FakeReply(json=anthropic_message("late"), delay=30))
        async with anthropic_client(server, timeout=0.2) as client:
            with pytest.raises(anthropic.APITimeoutError):
                await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
        thread = server.thread
        assert thread is not None
        assert thread.is_alive()
    assert not thread.is_alive()
    assert server.thread is None


async def test_event_delay_streams_incrementally(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES, FakeReply(sse=anthropic_stream("slow text"), event_delay=0.01)
    )
    async with (
        anthropic_client(fake_llm) as client,
        client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream,
    ):
        assert await stream.get_final_text() == "slow text"


def test_stopped_server_refuses_connections() -> None:
    with FakeLLMServer() as server:
        url = server.url
        assert httpx.post(f"{url}/v1/messages", json={}).status_code == 500  # unscripted
        assert server.problems
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/v1/messages", json={})
