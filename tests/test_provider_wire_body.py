"""The request body Loom sends itself is the request the SDK's typed method would send.

Loom serialises each message once and posts the bytes through the client's raw path; these
tests send the same request both ways to the fake server and compare what arrived, for a
history with tool calls, tool errors, raw arguments, thinking or reasoning items, non-ASCII
text and generation extensions; and check each message is serialised once, within a bound.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from loom import Generation, Model
from loom.core.messages import Message, ToolCall
from loom.providers.anthropic import AnthropicModel
from loom.providers.base import DeltaHandler, ModelRequest, StreamDelta
from loom.providers.openai import OpenAIModel
from loom.providers.wire_body import WireCache, dumps, spliced_body
from tests.fakes.llm_server import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    FakeLLMServer,
    anthropic_message,
    anthropic_stream,
    openai_chat,
    openai_chat_stream,
    openai_response,
)
from tests.providers_support import INSTRUCTIONS, fast_retry, weather

WEATHER = ToolCall("call_1", "weather", {"city": "Zürich", "days": [1, 2]})
BROKEN = ToolCall("call_2", "weather", {}, raw_arguments="{not json")
THINKING = {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "ZW5j"}
GENERATION = Generation(
    max_output_tokens=300, temperature=0.5, stop=("END",), extensions={"metadata": {"k": "v"}}
)


def history(provider_data: dict[str, Any] | None = None) -> list[Message]:
    return [
        Message.user("Wetter in Zürich? ✓"),
        Message.assistant("Let me look.", (WEATHER,), provider_data=provider_data),
        Message.tool_result(WEATHER, "sunny"),
        Message.assistant("", (BROKEN,)),
        Message.tool_result(BROKEN, "arguments are not JSON", is_error=True),
        Message.user("and tomorrow?"),
        Message.assistant("Rain."),
        Message.user(""),
    ]


def request(messages: list[Message], generation: Generation = GENERATION) -> ModelRequest:
    return ModelRequest(INSTRUCTIONS, messages, (weather.definition,), generation)


async def collect(_: StreamDelta) -> None:
    return None


async def sent_both_ways(
    fake: FakeLLMServer,
    route: str,
    model: Any,
    sdk_call: Callable[[Any], Any],
    loom_request: ModelRequest,
    on_delta: DeltaHandler | None = None,
) -> tuple[Any, Any]:
    """The JSON bodies of Loom's request and of the SDK's typed method's, as received."""
    try:
        await model.complete(loom_request, on_delta)
        await sdk_call(model.client)
    finally:
        await model.aclose()
    loom_body, sdk_body = (recorded.json for recorded in fake.requests_to(route))
    return loom_body, sdk_body


OPENAI_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": weather.definition.description,
        "parameters": weather.definition.parameters,
    },
}
CHAT_MESSAGES = [
    {"role": "system", "content": INSTRUCTIONS},
    {"role": "user", "content": "Wetter in Zürich? ✓"},
    {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": json.dumps(WEATHER.arguments)},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "weather", "arguments": "{not json"},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_2", "content": "arguments are not JSON"},
    {"role": "user", "content": "and tomorrow?"},
    {"role": "assistant", "content": "Rain."},
    {"role": "user", "content": ""},
]


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_chat_body_is_what_the_sdk_method_sends(
    fake_llm: FakeLLMServer, streaming: bool
) -> None:
    reply = openai_chat_stream(text="ok") if streaming else openai_chat(text="ok")
    fake_llm.script("chat", reply, reply)
    model = Model.openai(
        "gpt-4o", api_key="k", base_url=fake_llm.openai_base_url, retry=fast_retry()
    )
    stream_fields: dict[str, Any] = (
        {"stream": True, "stream_options": {"include_usage": True}} if streaming else {}
    )

    async def sdk_call(client: openai.AsyncOpenAI) -> None:
        reply = await client.chat.completions.create(
            model="gpt-4o",
            messages=CHAT_MESSAGES,  # type: ignore[arg-type]
            tools=[OPENAI_TOOL],  # type: ignore[list-item]
            max_completion_tokens=300,
            stop=["END"],
            temperature=0.5,
            extra_body={"metadata": {"k": "v"}},
            **stream_fields,
        )
        if streaming:
            async for _ in reply:  # type: ignore[union-attr]
                pass

    loom_body, sdk_body = await sent_both_ways(
        fake_llm, OPENAI_CHAT, model, sdk_call, request(history()), collect if streaming else None
    )
    assert loom_body == sdk_body
    assert loom_body["messages"] == CHAT_MESSAGES


async def test_a_responses_body_is_what_the_sdk_method_sends(fake_llm: FakeLLMServer) -> None:
    fake_llm.script("responses", openai_response(text="ok"), openai_response(text="ok"))
    model = Model.openai(
        "gpt-5.1",
        api_key="k",
        base_url=fake_llm.openai_base_url,
        api="responses",
        retry=fast_retry(),
    )
    call = {"type": "function_call", "name": "weather"}
    expected_input = [
        {"role": "user", "content": "Wetter in Zürich? ✓"},
        REASONING,
        {"role": "assistant", "content": "Let me look."},
        {**call, "call_id": "call_1", "arguments": json.dumps(WEATHER.arguments)},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {**call, "call_id": "call_2", "arguments": "{not json"},
        {"type": "function_call_output", "call_id": "call_2", "output": "arguments are not JSON"},
        {"role": "user", "content": "and tomorrow?"},
        {"role": "assistant", "content": "Rain."},
        {"role": "user", "content": ""},
    ]
    tool = {**OPENAI_TOOL["function"], "type": "function", "strict": False}  # type: ignore[dict-item]

    async def sdk_call(client: openai.AsyncOpenAI) -> None:
        await client.responses.create(
            model="gpt-5.1",
            input=expected_input,  # type: ignore[arg-type]
            instructions=INSTRUCTIONS,
            store=False,
            tools=[tool],  # type: ignore[list-item]
            max_output_tokens=300,
            include=["reasoning.encrypted_content"],
            extra_body={"metadata": {"k": "v"}},
        )

    loom_body, sdk_body = await sent_both_ways(
        fake_llm,
        OPENAI_RESPONSES,
        model,
        sdk_call,
        request(history({"openai_reasoning": [REASONING]})),
    )
    assert loom_body == sdk_body
    assert loom_body["input"] == expected_input


ANTHROPIC_TURNS = [
    {"role": "user", "content": "Wetter in Zürich? ✓"},
    {
        "role": "assistant",
        "content": [
            THINKING,
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": WEATHER.arguments},
        ],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}],
    },
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_2", "name": "weather", "input": {}}],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": "arguments are not JSON",
                "is_error": True,
            },
            {"type": "text", "text": "and tomorrow?"},
        ],
    },
    {"role": "assistant", "content": "Rain."},
    {"role": "user", "content": " "},
]


@pytest.mark.parametrize("streaming", [False, True])
async def test_an_anthropic_body_is_what_the_sdk_method_sends(
    fake_llm: FakeLLMServer, streaming: bool
) -> None:
    reply = anthropic_stream(text="ok") if streaming else anthropic_message(text="ok")
    fake_llm.script("messages", reply, reply)
    model = Model.anthropic(
        "claude-sonnet-4-6",
        api_key="k",
        base_url=fake_llm.anthropic_base_url,
        prompt_caching=True,
        retry=fast_retry(),
    )
    cached = {"cache_control": {"type": "ephemeral"}}
    tool = {
        "name": "weather",
        "description": weather.definition.description,
        "input_schema": weather.definition.parameters,
        **cached,
    }

    async def sdk_call(client: anthropic.AsyncAnthropic) -> None:
        fields: dict[str, Any] = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 300,
            "messages": ANTHROPIC_TURNS,
            "system": [{"type": "text", "text": INSTRUCTIONS, **cached}],
            "tools": [tool],
            "stop_sequences": ["END"],
            "extra_body": {"metadata": {"k": "v"}, "temperature": 0.5},
        }
        if streaming:
            async with client.messages.stream(**fields) as stream:
                await stream.get_final_message()
        else:
            await client.messages.create(**fields)

    loom_body, sdk_body = await sent_both_ways(
        fake_llm,
        ANTHROPIC_MESSAGES,
        model,
        sdk_call,
        request(history({"anthropic_thinking": [THINKING]})),
        collect if streaming else None,
    )
    assert loom_body == sdk_body
    assert loom_body["messages"] == ANTHROPIC_TURNS


def test_an_extension_wins_over_the_field_it_names() -> None:
    params = {"model": "m", "temperature": 0.1, "extra_body": {"temperature": 0.7}}
    assert json.loads(spliced_body(params, "messages", b"[1]")) == {
        "model": "m",
        "messages": [1],
        "temperature": 0.7,
    }
    replaced = {"model": "m", "extra_body": {"messages": [2]}}
    assert json.loads(spliced_body(replaced, "messages", b"[1]")) == {"model": "m", "messages": [2]}


@pytest.mark.parametrize("api", ["chat", "responses", "anthropic"])
async def test_each_message_is_serialised_once(
    fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    built: list[Message] = []
    model: Any
    if api == "anthropic":
        model = AnthropicModel(
            "claude-sonnet-4-6", api_key="k", base_url=fake_llm.anthropic_base_url
        )
        fake_llm.script("messages", *[anthropic_message(text="ok")] * 2)
    else:
        model = OpenAIModel("gpt-4o", api_key="k", base_url=fake_llm.openai_base_url, api=api)  # type: ignore[arg-type]
        reply = openai_response(text="ok") if api == "responses" else openai_chat(text="ok")
        fake_llm.script(api, reply, reply)
    build = model._wire.build

    def counting(message: Message) -> Any:
        built.append(message)
        return build(message)

    monkeypatch.setattr(model._wire, "build", counting)
    messages = history()
    try:
        await model.complete(request(messages[:5]))
        await model.complete(request(messages))
    finally:
        await model.aclose()
    assert built == messages  # the first five once, then only the three added


async def test_the_cache_is_bounded_and_its_answers_stay_right() -> None:
    cache = WireCache(lambda m: (dumps(m.content),), lambda f: len(f[0]), max_bytes=100)
    messages = [Message.user(f"message {i:04d}") for i in range(50)]
    for message in messages:
        assert (await cache.values([message])) == [(dumps(message.content),)]
        assert cache.size <= 100
    assert 0 < len(cache) <= 100 // len(dumps("message 0000"))
    assert (await cache.values(messages[:1])) == [(dumps("message 0000"),)]  # built again


async def test_a_long_history_met_first_lets_the_event_loop_run() -> None:
    cache = WireCache(lambda m: (dumps(m.content),), lambda f: len(f[0]))
    messages = [Message.user(f"m{i}") for i in range(5)]
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    await cache.values(messages, slice_seconds=0.0)  # yields after every message it builds
    task.cancel()
    assert turns - before >= len(messages) - 1
    assert len(cache) == len(messages)
    turns_after_fill = turns
    await cache.values(messages, slice_seconds=0.0)  # all held: nothing built, no yield
    assert turns == turns_after_fill


@pytest.mark.parametrize("deployment", [None, "my-deployment"])
async def test_an_azure_client_posts_where_its_own_method_would(deployment: str | None) -> None:
    import httpx2

    seen: list[tuple[str, Any]] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append((str(request.url), json.loads(request.content)))
        return httpx2.Response(200, json=openai_chat(text="ok", model="gpt-4o"))

    client = openai.AsyncAzureOpenAI(
        api_key="k",
        api_version="2024-10-21",
        azure_endpoint="https://example.openai.azure.com",
        azure_deployment=deployment,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)),
    )
    model = OpenAIModel("gpt-4o:custom", client=client)
    messages = [Message.user("hi")]
    try:
        await model.complete(ModelRequest("", messages, (), Generation()))
        await client.chat.completions.create(
            model="gpt-4o:custom", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await client.close()
    (loom_url, loom_body), (sdk_url, sdk_body) = seen
    assert loom_url == sdk_url
    assert loom_body == sdk_body


async def test_a_vertex_client_gets_the_sdk_method_it_routes_by() -> None:
    import httpx2

    seen: list[tuple[str, Any]] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append((str(request.url), json.loads(request.content)))
        return httpx2.Response(200, json=anthropic_message(text="ok"))

    client = anthropic.AsyncAnthropicVertex(
        region="us-east5",
        project_id="proj",
        access_token="tok",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)),
    )
    model = AnthropicModel("claude-sonnet-4-6", client=client)  # type: ignore[arg-type]
    generation = Generation(max_output_tokens=50, temperature=0.2)
    try:
        reply = await model.complete(ModelRequest("", [Message.user("hi")], (), generation))
        await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"temperature": 0.2},
        )
    finally:
        await client.close()
    assert reply.text == "ok"
    (loom_url, loom_body), (sdk_url, sdk_body) = seen
    assert loom_url == sdk_url
    assert loom_body == sdk_body
