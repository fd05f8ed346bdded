"""Claude through the real path: Agent -> AnthropicModel -> anthropic SDK -> fake server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loom import Agent, Generation, Model, RunResult, RunStatus, Usage
from loom.providers.anthropic import DEFAULT_MAX_TOKENS
from loom.providers.pricing import price_of
from tests.fakes.llm_server import (
    ANTHROPIC_MESSAGES,
    FakeLLMServer,
    FakeReply,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
)
from tests.providers_support import (  # noqa: F401 - _close_agents is a fixture
    INSTRUCTIONS,
    OPEN_AGENTS,
    _close_agents,
    clock,
    fast_retry,
    weather,
)

CLAUDE = "claude-sonnet-4-6"


def claude(fake: FakeLLMServer, name: str = CLAUDE, **options: Any) -> Any:
    options.setdefault("retry", fast_retry())
    return Model.anthropic(name, api_key="test-key", base_url=fake.anthropic_base_url, **options)


def agent_for(
    fake: FakeLLMServer,
    *,
    tools: Any = (weather, clock),
    generation: Generation | None = None,
    name: str = CLAUDE,
    **options: Any,
) -> Agent:
    agent = Agent(claude(fake, name, **options), INSTRUCTIONS, tools=tools, generation=generation)
    OPEN_AGENTS.append(agent)
    return agent


def bodies(fake: FakeLLMServer) -> list[dict[str, Any]]:
    return [request.json for request in fake.requests_to(ANTHROPIC_MESSAGES)]


def event_types(result: RunResult) -> list[str]:
    """The run's event types with consecutive repeats collapsed."""
    types: list[str] = []
    for event in result.events:
        if not types or types[-1] != event.type:
            types.append(event.type)
    return types


def expected_cost(model: str, usage: Usage) -> float:
    price = price_of(model)
    assert price is not None
    return price.cost(usage)


# -- text answers, usage and cost ------------------------------------------------------------


async def test_text_answer_usage_and_cost(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message(
            "Sunny.",
            model=CLAUDE,
            usage={
                "input_tokens": 100,
                "output_tokens": 20,
                "cache_read_input_tokens": 50,
                "cache_creation_input_tokens": 10,
            },
        ),
    )
    agent = agent_for(fake_llm)

    result = await agent.run("weather?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sunny."
    usage = result.usage
    assert usage.input_tokens == 160  # input + cache reads + cache writes
    assert usage.output_tokens == 20
    assert usage.cache_read_tokens == 50
    assert usage.cache_write_tokens == 10
    assert usage.requests == 1
    assert usage.unpriced_requests == 0
    price = price_of(CLAUDE)
    assert price is not None
    assert price.cache_read is not None
    assert price.cache_write is not None
    by_hand = (
        100 * price.input + 50 * price.cache_read + 10 * price.cache_write + 20 * price.output
    ) / 1_000_000
    assert usage.cost_usd == pytest.approx(by_hand, rel=1e-12)
    assert usage.cost_usd > 0

    [body] = bodies(fake_llm)
    assert body["model"] == CLAUDE
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["system"] == [{"type": "text", "text": INSTRUCTIONS}]
    assert body["messages"] == [{"role": "user", "content": "weather?"}]
    assert [t["name"] for t in body["tools"]] == ["weather", "clock"]
    assert body["tools"][0] == {
        "name": "weather",
        "description": "Current weather for a city.",
        "input_schema": weather.definition.parameters,
    }
    assert "cache_control" not in body["system"][0]
    assert "thinking" not in body
    assert "temperature" not in body
    assert "stream" not in body
    assert fake_llm.requests[0].api_key == "test-key"


async def test_unknown_model_is_unpriced(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(ANTHROPIC_MESSAGES, anthropic_message("hi", model="mystery-model-1"))
    agent = agent_for(fake_llm, name="mystery-model-1")

    result = await agent.run("hi")

    assert result.status is RunStatus.COMPLETED
    assert result.usage.requests == 1
    assert result.usage.unpriced_requests == 1
    assert result.usage.cost_usd == 0.0
    assert bodies(fake_llm)[0]["model"] == "mystery-model-1"


async def test_cost_uses_the_model_the_api_reports(fake_llm: FakeLLMServer) -> None:
    # A dated snapshot in the response is priced by its prefix.
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message("hi", model="claude-haiku-4-5-20251001", usage={"input_tokens": 1000}),
    )
    agent = agent_for(fake_llm, name="claude-haiku-4-5")

    result = await agent.run("hi")

    expected = expected_cost("claude-haiku-4-5", Usage(input_tokens=1000, output_tokens=5))
    assert result.usage.cost_usd == pytest.approx(expected, rel=1e-12)
    assert result.usage.unpriced_requests == 0


async def test_sampling_fields_sent_without_thinking(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(ANTHROPIC_MESSAGES, anthropic_message("ok", model=CLAUDE))
    generation = Generation(temperature=0.5, top_p=0.9, max_output_tokens=100, stop=("END",))
    agent = agent_for(fake_llm, generation=generation)

    result = await agent.run("hi")

    assert result.ok
    [body] = bodies(fake_llm)
    assert body["temperature"] == 0.5
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 100
    assert body["stop_sequences"] == ["END"]


# -- tools ------------------------------------------------------------------------------------


async def test_tool_round_trip(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message(
            "Let me check.",
            tool_uses=[("toolu_01", "weather", {"city": "Paris"})],
            model=CLAUDE,
            usage={"input_tokens": 30, "output_tokens": 7},
        ),
        anthropic_message(
            "It is sunny in Paris.", model=CLAUDE, usage={"input_tokens": 50, "output_tokens": 9}
        ),
    )
    agent = agent_for(fake_llm)

    result = await agent.run("Weather in Paris?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "It is sunny in Paris."
    assert result.usage.requests == 2
    assert result.usage.input_tokens == 80
    assert result.usage.output_tokens == 16
    expected = expected_cost(CLAUDE, Usage(input_tokens=30, output_tokens=7)) + expected_cost(
        CLAUDE, Usage(input_tokens=50, output_tokens=9)
    )
    assert result.usage.cost_usd == pytest.approx(expected, rel=1e-12)

    first, second = bodies(fake_llm)
    for body in (first, second):
        assert body["system"] == [{"type": "text", "text": INSTRUCTIONS}]
        assert INSTRUCTIONS not in json.dumps(body["messages"])  # sent once, as system
    assert second["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny in Paris"}
            ],
        },
    ]


async def test_parallel_tool_calls_answered_in_one_user_turn(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message(
            tool_uses=[
                ("toolu_a", "weather", {"city": "Oslo"}),
                ("toolu_b", "clock", {"tz": "UTC"}),
            ],
            model=CLAUDE,
        ),
        anthropic_message("Sunny at noon.", model=CLAUDE),
    )
    agent = agent_for(fake_llm)

    result = await agent.run("Weather and time?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sunny at noon."
    second = bodies(fake_llm)[1]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assistant = second["messages"][1]["content"]
    assert [(b["type"], b["id"], b["name"]) for b in assistant] == [
        ("tool_use", "toolu_a", "weather"),
        ("tool_use", "toolu_b", "clock"),
    ]
    assert second["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny in Oslo"},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "noon in UTC"},
    ]


async def test_tool_error_is_flagged(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message(tool_uses=[("toolu_x", "nosuchtool", {})], model=CLAUDE),
        anthropic_message("sorry", model=CLAUDE),
    )
    agent = agent_for(fake_llm)

    result = await agent.run("go")

    assert result.ok
    [tool_result] = bodies(fake_llm)[1]["messages"][2]["content"]
    assert tool_result["tool_use_id"] == "toolu_x"
    assert tool_result["is_error"] is True
    assert "unknown tool 'nosuchtool'" in tool_result["content"]


# -- streaming --------------------------------------------------------------------------------


async def test_streaming_events_and_usage(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_stream(
            tool_uses=[("toolu_01", "weather", {"city": "Rome"})],
            model=CLAUDE,
            usage={"input_tokens": 40, "output_tokens": 12, "cache_read_input_tokens": 8},
        ),
        anthropic_stream(
            "It is sunny in Rome.",
            model=CLAUDE,
            usage={"input_tokens": 60, "output_tokens": 6},
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
        "model.request",
        "model.token",
        "model.response",
        "run.completed",
    ]
    tokens = [e.payload["text"] for e in result.events if e.type == "model.token"]
    assert len(tokens) == 4
    assert "".join(tokens) == result.output
    tool_inputs = [e for e in result.events if e.type == "model.tool_input"]
    assert all(e.payload["tool_call_id"] == "toolu_01" for e in tool_inputs)
    assert all(e.payload["tool_name"] == "weather" for e in tool_inputs)
    assert json.loads("".join(e.payload["text"] for e in tool_inputs)) == {"city": "Rome"}
    started = next(e for e in result.events if e.type == "tool.started")
    assert started.payload["arguments"] == {"city": "Rome"}

    usage = result.usage
    assert usage.requests == 2
    assert usage.input_tokens == 40 + 8 + 60
    assert usage.cache_read_tokens == 8
    assert usage.output_tokens == 18
    assert usage.cost_usd > 0
    first, second = bodies(fake_llm)
    assert first["stream"] is True
    assert second["stream"] is True
    assert second["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Rome"}}
    ]
    responses = [e for e in result.events if e.type == "model.response"]
    assert responses[0].payload["usage"]["input_tokens"] == 48
    assert responses[1].payload["text"] == "It is sunny in Rome."


async def test_streaming_thinking_is_replayed(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_stream(
            tool_uses=[("toolu_01", "weather", {"city": "Rome"})],
            thinking="Look it up.",
            signature="sig-stream",
            model=CLAUDE,
        ),
        anthropic_stream("Sunny.", model=CLAUDE),
    )
    agent = agent_for(fake_llm, generation=Generation(stream=True), thinking=1024)

    result = await agent.run("Weather in Rome?")

    assert result.ok
    thinking = [e.payload["text"] for e in result.events if e.type == "model.thinking"]
    assert "".join(thinking) == "Look it up."
    assert event_types(result)[:4] == [
        "run.started",
        "model.request",
        "model.thinking",
        "model.tool_input",
    ]
    assistant = bodies(fake_llm)[1]["messages"][1]["content"]
    assert assistant == [
        {"type": "thinking", "thinking": "Look it up.", "signature": "sig-stream"},
        {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Rome"}},
    ]


# -- errors and retries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "invalid x-api-key"), (403, "Your API key does not have permission")],
)
async def test_auth_errors_fail_without_retry(
    fake_llm: FakeLLMServer, status: int, message: str
) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES, FakeReply(status=status, json=anthropic_error(status, message=message))
    )
    agent = agent_for(fake_llm, retry=fast_retry(3))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("authentication failed")
    assert message in result.error
    assert f"HTTP {status}" in result.error
    assert len(fake_llm.requests) == 1
    assert result.output == ""
    assert result.usage.requests == 0
    assert event_types(result)[-1] == "run.failed"


async def test_rate_limit_retried_after_retry_after_ms(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        FakeReply(
            status=429,
            json=anthropic_error(429, message="slow down"),
            headers={"retry-after-ms": "5"},
        ),
        anthropic_message("finally", model=CLAUDE),
    )
    agent = agent_for(fake_llm)

    result = await agent.run("hi")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "finally"
    assert len(fake_llm.requests) == 2
    assert result.usage.requests == 1  # only the successful call is counted
    # Loom retries itself: the SDK's own retry machinery stays off.
    assert [r.headers.get("x-stainless-retry-count") for r in fake_llm.requests] == ["0", "0"]


async def test_overloaded_529_is_retried(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        FakeReply(status=529, json=anthropic_error(529, message="Overloaded")),
        anthropic_message("ok", model=CLAUDE),
    )
    result = await agent_for(fake_llm).run("hi")
    assert result.ok
    assert len(fake_llm.requests) == 2


async def test_server_errors_exhaust_retries(fake_llm: FakeLLMServer) -> None:
    error = FakeReply(status=500, json=anthropic_error(500, message="Internal server error"))
    fake_llm.script(ANTHROPIC_MESSAGES, error, error, error)
    agent = agent_for(fake_llm, retry=fast_retry(2))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert len(fake_llm.requests) == 3
    assert result.error is not None
    assert result.error.startswith("provider error: anthropic: Internal server error")
    assert "HTTP 500" in result.error
    assert "after 3 attempts" in result.error


async def test_bad_request_fails_at_once(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        FakeReply(status=400, json=anthropic_error(400, message="max_tokens: too large")),
    )
    agent = agent_for(fake_llm, retry=fast_retry(3))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert len(fake_llm.requests) == 1
    assert result.error == "provider error: anthropic: max_tokens: too large (HTTP 400)"


async def test_retry_after_beyond_the_limit_fails_at_once(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        FakeReply(status=429, json=anthropic_error(429), headers={"retry-after": "120"}),
    )
    agent = agent_for(fake_llm, retry=fast_retry(3, max_retry_after=30))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert len(fake_llm.requests) == 1
    assert result.error is not None
    assert "rate limited" in result.error
    assert "Retry-After 120s exceeds the 30s limit" in result.error


async def test_unparseable_retry_after_falls_back_to_backoff(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        FakeReply(status=429, json=anthropic_error(429), headers={"retry-after": "soon-ish"}),
        anthropic_message("ok", model=CLAUDE),
    )
    result = await agent_for(fake_llm).run("hi")
    assert result.status is RunStatus.COMPLETED
    assert len(fake_llm.requests) == 2


# -- stop reasons -----------------------------------------------------------------------------


async def test_max_tokens_is_a_failure_that_keeps_the_output(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message("The answer is", stop_reason="max_tokens", model=CLAUDE),
    )
    result = await agent_for(fake_llm).run("hi")
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "truncated" in result.error
    assert result.output == "The answer is"
    assert result.usage.requests == 1


async def test_refusal_fails(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(ANTHROPIC_MESSAGES, anthropic_message("", stop_reason="refusal", model=CLAUDE))
    result = await agent_for(fake_llm).run("something bad")
    assert result.status is RunStatus.FAILED
    assert result.error == "the model refused the request"


async def test_context_window_exceeded_fails(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message("partial", stop_reason="model_context_window_exceeded", model=CLAUDE),
    )
    result = await agent_for(fake_llm).run("hi")
    assert result.status is RunStatus.FAILED
    assert result.error == "the request exceeded the model's context window"


# -- thinking and caching ---------------------------------------------------------------------


async def test_thinking_budget_and_replay(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message(
            tool_uses=[("toolu_t", "weather", {"city": "Lima"})],
            thinking="I need the weather tool.",
            signature="sig-abc",
            model=CLAUDE,
        ),
        anthropic_message("Sunny in Lima.", model=CLAUDE),
    )
    agent = agent_for(
        fake_llm,
        thinking=2048,
        generation=Generation(temperature=0.5, top_p=0.9, max_output_tokens=100),
    )

    result = await agent.run("Weather in Lima?")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "Sunny in Lima."
    first, second = bodies(fake_llm)
    for body in (first, second):
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert body["max_tokens"] > 2048
        assert "temperature" not in body
        assert "top_p" not in body
    assert second["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "I need the weather tool.", "signature": "sig-abc"},
            {"type": "tool_use", "id": "toolu_t", "name": "weather", "input": {"city": "Lima"}},
        ],
    }
    assert second["messages"][2]["content"][0]["tool_use_id"] == "toolu_t"


async def test_generation_thinking_budget_overrides_the_model(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(ANTHROPIC_MESSAGES, anthropic_message("ok", model=CLAUDE))
    agent = agent_for(fake_llm, thinking=2048, generation=Generation(thinking_budget_tokens=16000))
    assert (await agent.run("hi")).ok
    [body] = bodies(fake_llm)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16000}
    assert body["max_tokens"] > 16000


async def test_adaptive_thinking(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(ANTHROPIC_MESSAGES, anthropic_message("ok", model=CLAUDE))
    agent = agent_for(fake_llm, thinking="adaptive", generation=Generation(temperature=0.3))

    result = await agent.run("hi")

    assert result.ok
    [body] = bodies(fake_llm)
    assert body["thinking"] == {"type": "adaptive"}
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert "temperature" not in body


async def test_prompt_caching_marks_system_and_last_tool(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message(
            "cached",
            model=CLAUDE,
            usage={"input_tokens": 5, "cache_creation_input_tokens": 2000, "output_tokens": 3},
        ),
        anthropic_message(
            "cached again",
            model=CLAUDE,
            usage={"input_tokens": 5, "cache_read_input_tokens": 2000, "output_tokens": 3},
        ),
    )
    agent = agent_for(fake_llm, prompt_caching=True)
    session = agent.session("cache-session")

    first = await session.run("hi")
    second = await session.run("again")

    assert first.ok
    assert second.ok
    for body in bodies(fake_llm):
        assert body["system"] == [
            {"type": "text", "text": INSTRUCTIONS, "cache_control": {"type": "ephemeral"}}
        ]
        assert "cache_control" not in body["tools"][0]
        assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert first.usage.cache_write_tokens == 2000
    assert second.usage.cache_read_tokens == 2000
    # Cache reads are cheaper than writes.
    assert second.usage.cost_usd < first.usage.cost_usd
    assert session.usage.cache_write_tokens == 2000
    assert session.usage.cache_read_tokens == 2000
    assert session.usage.input_tokens == 2 * 2005


# -- usage across runs ------------------------------------------------------------------------


async def test_session_usage_sums_runs_and_history_is_sent(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_message(
            tool_uses=[("toolu_1", "weather", {"city": "Bern"})],
            model=CLAUDE,
            usage={"input_tokens": 10, "output_tokens": 1},
        ),
        anthropic_message("Sunny.", model=CLAUDE, usage={"input_tokens": 20, "output_tokens": 2}),
        anthropic_message(
            "Still sunny.", model=CLAUDE, usage={"input_tokens": 40, "output_tokens": 4}
        ),
    )
    agent = agent_for(fake_llm)
    session = agent.session("usage-session")

    first = await session.run("Weather in Bern?")
    second = await session.run("And now?")

    assert first.ok
    assert second.ok
    assert (first.usage.requests, first.usage.input_tokens, first.usage.output_tokens) == (
        2,
        30,
        3,
    )
    assert (second.usage.requests, second.usage.input_tokens) == (1, 40)
    assert session.usage.requests == 3
    assert session.usage.input_tokens == 70
    assert session.usage.output_tokens == 7
    assert session.usage.cost_usd == pytest.approx(
        first.usage.cost_usd + second.usage.cost_usd, rel=1e-12
    )
    # The second run's request carries the first run's whole exchange.
    third = bodies(fake_llm)[2]
    assert [m["role"] for m in third["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert third["messages"][2]["content"][0]["type"] == "tool_result"
    assert third["messages"][-1]["content"] == "And now?"
    assert third["system"] == [{"type": "text", "text": INSTRUCTIONS}]


async def test_timeout_is_retried(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        FakeReply(json=anthropic_message("too late", model=CLAUDE), delay=10),
        anthropic_message("in time", model=CLAUDE),
    )
    agent = agent_for(fake_llm, timeout=0.3)

    result = await agent.run("hi")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "in time"
    assert len(fake_llm.requests) == 2
