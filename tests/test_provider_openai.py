"""GPT through the real path: Agent -> OpenAIModel -> openai SDK -> fake server.

Chat Completions (the default) and the Responses API (``api="responses"``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from loom import Agent, Generation, Model, RunResult, RunStatus, Usage
from loom.providers.pricing import price_of
from tests.fakes.llm_server import (
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    FakeLLMServer,
    FakeReply,
    openai_chat,
    openai_chat_stream,
    openai_error,
    openai_response,
    openai_response_stream,
)
from tests.providers_support import (  # noqa: F401 - _close_agents is a fixture
    INSTRUCTIONS,
    OPEN_AGENTS,
    _close_agents,
    clock,
    fast_retry,
    weather,
)

GPT4O = "gpt-4o"
GPT5 = "gpt-5.1"
SAMPLING = Generation(temperature=0.5, top_p=0.9, max_output_tokens=100)


def gpt(fake: FakeLLMServer, name: str = GPT4O, **options: Any) -> Any:
    options.setdefault("retry", fast_retry())
    return Model.openai(name, api_key="test-key", base_url=fake.openai_base_url, **options)


def agent_for(
    fake: FakeLLMServer,
    *,
    name: str = GPT4O,
    tools: Any = (weather, clock),
    generation: Generation | None = None,
    **options: Any,
) -> Agent:
    agent = Agent(gpt(fake, name, **options), INSTRUCTIONS, tools=tools, generation=generation)
    OPEN_AGENTS.append(agent)
    return agent


def bodies(fake: FakeLLMServer, route: str = OPENAI_CHAT) -> list[dict[str, Any]]:
    return [request.json for request in fake.requests_to(route)]


def event_types(result: RunResult) -> list[str]:
    """The run's event types with consecutive repeats collapsed."""
    types: list[str] = []
    for event in result.events:
        if not types or types[-1] != event.type:
            types.append(event.type)
    return types


def cost(model: str, usage: Usage) -> float:
    price = price_of(model)
    assert price is not None
    return price.cost(usage)


# ============================================================================ chat completions


async def test_chat_text_usage_and_cost(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat(
            "Sunny.",
            model=GPT4O,
            usage={"prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 40},
        ),
    )
    agent = agent_for(fake_llm)

    result = await agent.run("weather?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sunny."
    usage = result.usage
    assert usage.input_tokens == 100  # OpenAI's prompt_tokens already include cached ones
    assert usage.cache_read_tokens == 40
    assert usage.cache_write_tokens == 0
    assert usage.output_tokens == 20
    assert usage.requests == 1
    price = price_of(GPT4O)
    assert price is not None
    assert price.cache_read is not None
    by_hand = (60 * price.input + 40 * price.cache_read + 20 * price.output) / 1_000_000
    assert usage.cost_usd == pytest.approx(by_hand, rel=1e-12)
    assert usage.unpriced_requests == 0

    [body] = bodies(fake_llm)
    assert body["model"] == GPT4O
    assert body["messages"] == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "weather?"},
    ]
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Current weather for a city.",
            "parameters": weather.definition.parameters,
        },
    }
    assert "stream" not in body
    assert fake_llm.requests[0].headers["authorization"] == "Bearer test-key"


async def test_chat_reasoning_tokens_counted(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat(
            "42",
            model=GPT5,
            usage={"prompt_tokens": 10, "completion_tokens": 50, "reasoning_tokens": 45},
        ),
    )
    result = await agent_for(fake_llm, name=GPT5).run("think")
    assert result.usage.reasoning_tokens == 45
    assert result.usage.output_tokens == 50
    assert result.usage.cost_usd == pytest.approx(
        cost(GPT5, Usage(input_tokens=10, output_tokens=50)), rel=1e-12
    )


async def test_chat_unknown_model_is_unpriced(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_CHAT, openai_chat("hi", model="llama-3-70b"))
    result = await agent_for(fake_llm, name="llama-3-70b").run("hi")
    assert result.ok
    assert result.usage.unpriced_requests == 1
    assert result.usage.cost_usd == 0.0
    assert result.usage.input_tokens == 10


async def test_chat_tool_round_trip(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat(
            "Checking.",
            tool_calls=[("call_1", "weather", {"city": "Paris"})],
            model=GPT4O,
            usage={"prompt_tokens": 30, "completion_tokens": 7},
        ),
        openai_chat(
            "Sunny in Paris.", model=GPT4O, usage={"prompt_tokens": 50, "completion_tokens": 9}
        ),
    )
    agent = agent_for(fake_llm)

    result = await agent.run("Weather in Paris?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sunny in Paris."
    assert (result.usage.requests, result.usage.input_tokens, result.usage.output_tokens) == (
        2,
        80,
        16,
    )
    first, second = bodies(fake_llm)
    for body in (first, second):
        system = [m for m in body["messages"] if m["role"] == "system"]
        assert system == [{"role": "system", "content": INSTRUCTIONS}]
        assert body["messages"][0]["role"] == "system"
    assert second["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"},
    ]


async def test_chat_parallel_tool_calls(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat(
            tool_calls=[
                ("call_a", "weather", {"city": "Oslo"}),
                ("call_b", "clock", {"tz": "UTC"}),
            ],
            model=GPT4O,
        ),
        openai_chat("Sunny at noon.", model=GPT4O),
    )
    result = await agent_for(fake_llm).run("Weather and time?")

    assert result.ok
    second = bodies(fake_llm)[1]
    assistant, *tool_messages = second["messages"][2:]
    assert assistant["content"] is None
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_a", "call_b"]
    assert tool_messages == [
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny in Oslo"},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon in UTC"},
    ]


async def test_chat_malformed_tool_arguments_go_back_as_an_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat(tool_calls=[("call_bad", "weather", "{not json")], model=GPT4O),
        openai_chat("Sorry, retrying failed.", model=GPT4O),
    )
    result = await agent_for(fake_llm).run("Weather?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sorry, retrying failed."
    messages = bodies(fake_llm)[1]["messages"]
    # The raw text is sent back as the model wrote it, so the transcript stays truthful.
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == "{not json"
    tool_message = messages[3]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == "call_bad"
    assert "not a JSON object" in tool_message["content"]
    assert "{not json" in tool_message["content"]
    completed = next(e for e in result.events if e.type == "tool.completed")
    assert completed.payload["is_error"] is True


async def test_chat_reasoning_model_request_body(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_CHAT, openai_chat("ok", model=GPT5), openai_chat("ok", model="o3"))
    generation = SAMPLING.merged(reasoning_effort="low")

    for name in (GPT5, "o3"):
        assert (await agent_for(fake_llm, name=name, generation=generation).run("hi")).ok

    for body in bodies(fake_llm):
        assert body["max_completion_tokens"] == 100
        assert body["reasoning_effort"] == "low"
        assert "temperature" not in body
        assert "top_p" not in body
        assert "max_tokens" not in body


async def test_chat_non_reasoning_model_request_body(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_CHAT, openai_chat("ok", model=GPT4O))
    generation = SAMPLING.merged(stop=("END",), extensions={"seed": 7})
    assert (await agent_for(fake_llm, generation=generation).run("hi")).ok

    [body] = bodies(fake_llm)
    assert body["temperature"] == 0.5
    assert body["top_p"] == 0.9
    assert body["max_completion_tokens"] == 100
    assert body["stop"] == ["END"]
    assert body["seed"] == 7
    assert "max_tokens" not in body
    assert "reasoning_effort" not in body


async def test_chat_reasoning_flag_overrides_the_name(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_CHAT, openai_chat("ok", model="my-local-reasoner"))
    agent = agent_for(fake_llm, name="my-local-reasoner", reasoning=True, generation=SAMPLING)
    assert (await agent.run("hi")).ok
    [body] = bodies(fake_llm)
    assert "temperature" not in body
    assert body["max_completion_tokens"] == 100


async def test_chat_streaming(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat_stream(
            tool_calls=[
                ("call_1", "weather", {"city": "Rome"}),
                ("call_2", "clock", {"tz": "CET"}),
            ],
            model=GPT4O,
            usage={"prompt_tokens": 40, "completion_tokens": 12, "cached_tokens": 8},
        ),
        openai_chat_stream(
            "It is sunny in Rome.",
            model=GPT4O,
            usage={"prompt_tokens": 60, "completion_tokens": 6},
            fragments=4,
        ),
    )
    agent = agent_for(fake_llm, generation=Generation(stream=True))

    result = await agent.run("Weather in Rome?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "It is sunny in Rome."
    assert event_types(result) == [
        "run.started",
        "model.request",
        "model.tool_input",
        "model.response",
        "tool.started",
        "tool.completed",
        "tool.started",
        "tool.completed",
        "model.request",
        "model.token",
        "model.response",
        "run.completed",
    ]
    tokens = [e.payload["text"] for e in result.events if e.type == "model.token"]
    assert len(tokens) == 4
    assert "".join(tokens) == result.output
    inputs: dict[tuple[str, str], str] = {}
    for event in result.events:
        if event.type == "model.tool_input":
            key = (event.payload["tool_call_id"], event.payload["tool_name"])
            inputs[key] = inputs.get(key, "") + event.payload["text"]
    assert {k: json.loads(v) for k, v in inputs.items()} == {
        ("call_1", "weather"): {"city": "Rome"},
        ("call_2", "clock"): {"tz": "CET"},
    }
    assert result.usage.requests == 2
    assert result.usage.input_tokens == 100
    assert result.usage.cache_read_tokens == 8
    assert result.usage.output_tokens == 18
    expected = cost(GPT4O, Usage(input_tokens=40, output_tokens=12, cache_read_tokens=8)) + cost(
        GPT4O, Usage(input_tokens=60, output_tokens=6)
    )
    assert result.usage.cost_usd == pytest.approx(expected, rel=1e-12)
    first, second = bodies(fake_llm)
    for body in (first, second):
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in second["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
    ]
    assert [c["function"]["arguments"] for c in second["messages"][2]["tool_calls"]] == [
        '{"city": "Rome"}',
        '{"tz": "CET"}',
    ]


async def test_chat_stream_refusal_fails(fake_llm: FakeLLMServer) -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-refusal",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": GPT4O,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    fake_llm.script(
        OPENAI_CHAT,
        [
            (None, chunk({"role": "assistant", "content": None, "refusal": ""})),
            (None, chunk({"refusal": "I can't "})),
            (None, chunk({"refusal": "help with that."})),
            (None, chunk({}, "stop")),
            (None, "[DONE]"),
        ],
    )
    result = await agent_for(fake_llm, generation=Generation(stream=True)).run("bad")
    assert result.status is RunStatus.FAILED
    assert result.error == "the model refused the request"
    assert result.output == "I can't help with that."


@pytest.mark.parametrize(
    ("status", "message", "shown"),
    [
        # The provider quotes the key it refused: the result shows it masked.
        (401, "Incorrect API key provided: test-key.", "Incorrect API key provided: ***."),
        (403, "Country, region, or territory not supported", None),
    ],
)
async def test_chat_auth_errors_fail_without_retry(
    fake_llm: FakeLLMServer, status: int, message: str, shown: str | None
) -> None:
    fake_llm.script(OPENAI_CHAT, FakeReply(status=status, json=openai_error(status, message)))
    result = await agent_for(fake_llm, retry=fast_retry(3)).run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("authentication failed")
    assert (shown or message) in result.error
    assert "test-key" not in result.error
    assert len(fake_llm.requests) == 1


async def test_chat_rate_limit_then_success(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        FakeReply(status=429, json=openai_error(429, "slow down"), headers={"retry-after-ms": "5"}),
        openai_chat("ok", model=GPT4O),
    )
    result = await agent_for(fake_llm).run("hi")
    assert result.status is RunStatus.COMPLETED
    assert result.output == "ok"
    assert len(fake_llm.requests) == 2
    assert result.usage.requests == 1


async def test_chat_server_errors_exhaust_retries(fake_llm: FakeLLMServer) -> None:
    error = FakeReply(status=500, json=openai_error(500, "The server had an error"))
    fake_llm.script(OPENAI_CHAT, error, error, error)
    result = await agent_for(fake_llm, retry=fast_retry(2)).run("hi")

    assert result.status is RunStatus.FAILED
    assert len(fake_llm.requests) == 3
    assert result.error == (
        "provider error: openai: The server had an error (HTTP 500) after 3 attempts"
    )


async def test_chat_bad_request_fails_at_once(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT, FakeReply(status=400, json=openai_error(400, "Unsupported parameter"))
    )
    result = await agent_for(fake_llm, retry=fast_retry(3)).run("hi")
    assert result.status is RunStatus.FAILED
    assert len(fake_llm.requests) == 1
    assert result.error == "provider error: openai: Unsupported parameter (HTTP 400)"


async def test_chat_retry_after_beyond_the_limit(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        FakeReply(status=429, json=openai_error(429, "slow down"), headers={"retry-after": "90"}),
    )
    result = await agent_for(fake_llm, retry=fast_retry(3)).run("hi")
    assert result.status is RunStatus.FAILED
    assert len(fake_llm.requests) == 1
    assert result.error is not None
    assert "Retry-After 90s exceeds the 60s limit" in result.error


async def test_chat_finish_length_is_truncation(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_CHAT, openai_chat("The answer is", finish_reason="length", model=GPT4O))
    result = await agent_for(fake_llm).run("hi")
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "truncated" in result.error
    assert result.output == "The answer is"


@pytest.mark.parametrize(
    "reply",
    [
        openai_chat(None, refusal="I can't help with that.", model=GPT4O),
        openai_chat("", finish_reason="content_filter", model=GPT4O),
    ],
    ids=["refusal", "content_filter"],
)
async def test_chat_refusal_fails(fake_llm: FakeLLMServer, reply: dict[str, Any]) -> None:
    fake_llm.script(OPENAI_CHAT, reply)
    result = await agent_for(fake_llm).run("bad")
    assert result.status is RunStatus.FAILED
    assert result.error == "the model refused the request"


async def test_chat_session_usage_sums_runs(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat(
            tool_calls=[("call_1", "weather", {"city": "Bern"})],
            model=GPT4O,
            usage={"prompt_tokens": 10, "completion_tokens": 1},
        ),
        openai_chat("Sunny.", model=GPT4O, usage={"prompt_tokens": 20, "completion_tokens": 2}),
        openai_chat("Still.", model=GPT4O, usage={"prompt_tokens": 40, "completion_tokens": 4}),
    )
    session = agent_for(fake_llm).session("s")

    first = await session.run("Weather in Bern?")
    second = await session.run("And now?")

    assert first.usage.requests == 2
    assert second.usage.requests == 1
    assert session.usage.requests == 3
    assert session.usage.input_tokens == 70
    assert session.usage.output_tokens == 7
    assert session.usage.cost_usd == pytest.approx(
        cost(GPT4O, Usage(input_tokens=70, output_tokens=7)), rel=1e-12
    )
    third = bodies(fake_llm)[2]
    assert [m["role"] for m in third["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]


# ============================================================================ responses API


def responses_agent(fake: FakeLLMServer, **options: Any) -> Agent:
    return agent_for(fake, api="responses", **options)


async def test_responses_text_usage_and_request(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        openai_response(
            "Sunny.",
            model=GPT4O,
            usage={"input_tokens": 100, "output_tokens": 20, "cached_tokens": 40},
        ),
    )
    result = await responses_agent(fake_llm, generation=SAMPLING).run("weather?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sunny."
    assert (result.usage.input_tokens, result.usage.output_tokens) == (100, 20)
    assert result.usage.cache_read_tokens == 40
    assert result.usage.cost_usd == pytest.approx(
        cost(GPT4O, Usage(input_tokens=100, output_tokens=20, cache_read_tokens=40)), rel=1e-12
    )
    [body] = bodies(fake_llm, OPENAI_RESPONSES)
    assert body["model"] == GPT4O
    assert body["instructions"] == INSTRUCTIONS
    assert body["store"] is False
    assert body["input"] == [{"role": "user", "content": "weather?"}]
    assert body["max_output_tokens"] == 100
    assert body["temperature"] == 0.5
    assert body["top_p"] == 0.9
    assert "include" not in body
    assert body["tools"][0] == {
        "type": "function",
        "name": "weather",
        "description": "Current weather for a city.",
        "parameters": weather.definition.parameters,
        "strict": False,
    }
    assert fake_llm.requests_to(OPENAI_CHAT) == []


async def test_responses_reasoning_model_request(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_RESPONSES, openai_response("ok", model=GPT5))
    generation = SAMPLING.merged(reasoning_effort="high")
    result = await responses_agent(fake_llm, name=GPT5, generation=generation).run("hi")

    assert result.ok
    [body] = bodies(fake_llm, OPENAI_RESPONSES)
    assert body["max_output_tokens"] == 100
    assert body["reasoning"] == {"effort": "high"}
    assert body["include"] == ["reasoning.encrypted_content"]
    assert "temperature" not in body
    assert "top_p" not in body


async def test_responses_tool_round_trip(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        openai_response(
            function_calls=[
                ("call_1", "weather", {"city": "Paris"}),
                ("call_2", "clock", {"tz": "CET"}),
            ],
            model=GPT4O,
        ),
        openai_response("Sunny at noon.", model=GPT4O),
    )
    result = await responses_agent(fake_llm).run("Weather and time in Paris?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sunny at noon."
    assert result.usage.requests == 2
    _, second = bodies(fake_llm, OPENAI_RESPONSES)
    assert second["instructions"] == INSTRUCTIONS
    assert INSTRUCTIONS not in json.dumps(second["input"])
    assert second["input"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "weather",
            "arguments": '{"city": "Paris"}',
        },
        {
            "type": "function_call",
            "call_id": "call_2",
            "name": "clock",
            "arguments": '{"tz": "CET"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny in Paris"},
        {"type": "function_call_output", "call_id": "call_2", "output": "noon in CET"},
    ]


async def test_responses_malformed_arguments(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        openai_response(function_calls=[("call_bad", "weather", "{not json")], model=GPT4O),
        openai_response("ok", model=GPT4O),
    )
    result = await responses_agent(fake_llm).run("hi")
    assert result.ok
    output = bodies(fake_llm, OPENAI_RESPONSES)[1]["input"][-1]
    assert output["type"] == "function_call_output"
    assert output["call_id"] == "call_bad"
    assert "not a JSON object" in output["output"]


async def test_responses_streaming(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        openai_response_stream(
            function_calls=[("call_1", "weather", {"city": "Rome"})],
            model=GPT4O,
            usage={"input_tokens": 30, "output_tokens": 5},
        ),
        openai_response_stream(
            "Sunny in Rome.", model=GPT4O, usage={"input_tokens": 50, "output_tokens": 7}
        ),
    )
    result = await responses_agent(fake_llm, generation=Generation(stream=True)).run("Rome?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sunny in Rome."
    assert event_types(result) == [
        "run.started",
        "model.request",
        "model.tool_input",
        "model.response",
        "tool.started",
        "tool.completed",
        "model.request",
        "model.token",
        "model.response",
        "run.completed",
    ]
    assert "".join(e.payload["text"] for e in result.events if e.type == "model.token") == (
        "Sunny in Rome."
    )
    tool_inputs = [e for e in result.events if e.type == "model.tool_input"]
    assert {(e.payload["tool_call_id"], e.payload["tool_name"]) for e in tool_inputs} == {
        ("call_1", "weather")
    }
    assert (result.usage.input_tokens, result.usage.output_tokens) == (80, 12)
    for body in bodies(fake_llm, OPENAI_RESPONSES):
        assert body["stream"] is True


async def test_responses_incomplete_is_truncation(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_RESPONSES, openai_response("cut sh", status="incomplete", model=GPT4O))
    result = await responses_agent(fake_llm).run("hi")
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "truncated" in result.error
    assert result.output == "cut sh"


async def test_responses_auth_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES, FakeReply(status=401, json=openai_error(401, "Incorrect API key"))
    )
    result = await responses_agent(fake_llm, retry=fast_retry(3)).run("hi")
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("authentication failed")
    assert "Incorrect API key" in result.error
    assert len(fake_llm.requests) == 1


async def test_responses_server_errors_retry_then_succeed(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        FakeReply(status=503, json=openai_error(503, "busy")),
        openai_response("ok", model=GPT4O),
    )
    result = await responses_agent(fake_llm).run("hi")
    assert result.ok
    assert len(fake_llm.requests) == 2


async def test_chat_empty_answer_replays_as_empty_string(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(OPENAI_CHAT, openai_chat(None, model=GPT4O), openai_chat("second", model=GPT4O))
    session = agent_for(fake_llm).session("empty")

    first = await session.run("say nothing")
    second = await session.run("now say something")

    assert first.ok
    assert first.output == ""
    assert second.output == "second"
    assistant = bodies(fake_llm)[1]["messages"][2]
    # Chat Completions requires content unless the message has tool calls.
    assert assistant == {"role": "assistant", "content": ""}


async def test_responses_reasoning_items_are_replayed(fake_llm: FakeLLMServer) -> None:
    first = openai_response(function_calls=[("call_1", "weather", {"city": "Kyiv"})], model=GPT5)
    reasoning = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [],
        "encrypted_content": "gAAAA-encrypted",
    }
    first["output"].insert(0, reasoning)
    fake_llm.script(OPENAI_RESPONSES, first, openai_response("Sunny.", model=GPT5))

    result = await responses_agent(fake_llm, name=GPT5).run("Weather in Kyiv?")

    assert result.ok
    second = bodies(fake_llm, OPENAI_RESPONSES)[1]
    assert second["include"] == ["reasoning.encrypted_content"]
    assert [item.get("type", item.get("role")) for item in second["input"]] == [
        "user",
        "reasoning",
        "function_call",
        "function_call_output",
    ]
    assert second["input"][1] == reasoning


async def test_chat_stream_cut_off_before_its_finish_reason_fails_the_run(
    fake_llm: FakeLLMServer,
) -> None:
    def finishes(data: object) -> bool:
        return isinstance(data, dict) and any(
            choice.get("finish_reason") for choice in data.get("choices", ())
        )

    events = openai_chat_stream("Rolling back deploy 4", model=GPT4O)
    cut = [(name, data) for name, data in events if not finishes(data)]
    assert len(cut) < len(events)
    fake_llm.script(OPENAI_CHAT, cut)
    agent = agent_for(fake_llm, generation=Generation(stream=True))

    result = await agent.run("Roll back?")

    assert result.status is RunStatus.FAILED
    assert "cut off" in (result.error or "")
