"""``agent.stream()`` and ``Session.stream`` stream tokens: the provider is asked for a
streamed response (with usage) and the text arrives as ``model.token`` events, without
``Generation(stream=True)``; ``run()`` still asks for a whole answer."""

from __future__ import annotations

from typing import Any

from loom import Agent, Model, RunEvent
from loom.providers.base import ModelRequest
from tests.fakes.llm_server import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    FakeLLMServer,
    anthropic_stream,
    openai_chat_stream,
    openai_response_stream,
)
from tests.providers_support import OPEN_AGENTS, _close_agents  # noqa: F401 - a fixture


def tokens(events: list[RunEvent]) -> str:
    return "".join(e.payload["text"] for e in events if e.type == "model.token")


def answer(events: list[RunEvent]) -> Any:
    [response] = [e for e in events if e.type == "model.response"]
    return response.payload


async def test_the_test_model_streams_tokens() -> None:
    agent = Agent(Model.test(output_text="a long enough answer to come in several pieces"))
    events = [event async for event in agent.stream("hi")]
    pieces = [e for e in events if e.type == "model.token"]
    assert len(pieces) > 1
    assert tokens(events) == answer(events)["text"]
    result = await agent.run("hi")
    assert [e for e in result.events if e.type == "model.token"] == []


async def test_a_session_streams_tokens_of_a_function_model() -> None:
    streamed: list[bool] = []

    def model(request: ModelRequest) -> str:
        return "pong"

    agent = Agent(Model.function(model))

    def before_llm(**payload: Any) -> None:
        streamed.append(payload["stream"])

    agent.on("before_llm", before_llm)
    session = agent.session("s")
    events = [event async for event in session.stream("ping")]
    await session.run("again")
    assert tokens(events) == "pong"
    assert streamed == [True, False]


async def test_anthropic_is_asked_for_a_stream(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        ANTHROPIC_MESSAGES,
        anthropic_stream(
            "It is sunny.", model="claude-sonnet-4-6", usage={"input_tokens": 9, "output_tokens": 4}
        ),
    )
    model = Model.anthropic(
        "claude-sonnet-4-6", api_key="test-key", base_url=fake_llm.anthropic_base_url
    )
    agent = Agent(model, "Be terse.")
    OPEN_AGENTS.append(agent)
    events = [event async for event in agent.stream("weather?")]
    assert tokens(events) == "It is sunny."
    assert answer(events)["usage"]["output_tokens"] == 4
    [body] = [request.json for request in fake_llm.requests_to(ANTHROPIC_MESSAGES)]
    assert body["stream"] is True


async def test_openai_chat_is_asked_for_a_stream_with_usage(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_CHAT,
        openai_chat_stream(
            "It is sunny.",
            model="gpt-4o",
            usage={"prompt_tokens": 9, "completion_tokens": 4},
            fragments=3,
        ),
    )
    model = Model.openai("gpt-4o", api_key="test-key", base_url=fake_llm.openai_base_url)
    agent = Agent(model, "Be terse.")
    OPEN_AGENTS.append(agent)
    events = [event async for event in agent.stream("weather?")]
    assert len([e for e in events if e.type == "model.token"]) == 3
    assert tokens(events) == "It is sunny."
    assert answer(events)["usage"]["output_tokens"] == 4
    [body] = [request.json for request in fake_llm.requests_to(OPENAI_CHAT)]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_openai_responses_is_asked_for_a_stream(fake_llm: FakeLLMServer) -> None:
    fake_llm.script(
        OPENAI_RESPONSES,
        openai_response_stream(
            "It is sunny.", model="gpt-4o", usage={"input_tokens": 9, "output_tokens": 4}
        ),
    )
    model = Model.openai(
        "gpt-4o", api_key="test-key", base_url=fake_llm.openai_base_url, api="responses"
    )
    agent = Agent(model, "Be terse.")
    OPEN_AGENTS.append(agent)
    events = [event async for event in agent.stream("weather?")]
    assert tokens(events) == "It is sunny."
    assert answer(events)["usage"]["output_tokens"] == 4
    [body] = [request.json for request in fake_llm.requests_to(OPENAI_RESPONSES)]
    assert body["stream"] is True
