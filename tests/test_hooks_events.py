"""Hooks (agent.on) and the run event stream."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from loom import (
    Agent,
    Generation,
    Model,
    ModelRequest,
    ModelResponse,
    ProviderError,
    RunEvent,
    RunStatus,
    ToolCall,
    tool,
)


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def one_tool_then_answer(request: ModelRequest) -> ModelResponse | str:
    if request.messages[-1].role == "user":
        return ModelResponse.of_tool_calls(ToolCall("c1", "lookup", {"key": "k"}))
    return "the value is known"


def fresh_agent() -> Agent:
    return Agent(Model.function(one_tool_then_answer), tools=[lookup])


EXPECTED_EVENTS = [
    "run.started",
    "model.request",
    "model.response",
    "tool.started",
    "tool.completed",
    "model.request",
    "model.response",
    "run.completed",
]


# -- hooks ----------------------------------------------------------------------------------


async def test_hook_order_and_payloads_for_a_run_with_one_tool_call() -> None:
    agent = fresh_agent()
    seen: list[tuple[str, dict[str, Any]]] = []
    agent.on("*", lambda event_name, **payload: seen.append((event_name, payload)))

    result = await agent.session("hooks").run("find k")

    assert [name for name, _ in seen] == [
        "before_run",
        "before_llm",
        "after_llm",
        "before_tool",
        "after_tool",
        "before_llm",
        "after_llm",
        "after_run",
    ]
    payloads = dict(seen[:1] + seen[3:5] + seen[-1:])
    assert {p["run_id"] for _, p in seen} == {result.run_id}

    before_run = payloads["before_run"]
    assert before_run["session_id"] == "hooks"
    assert before_run["prompt"] == "find k"
    assert "context" in before_run

    before_llm, after_llm = seen[1][1], seen[2][1]
    assert isinstance(before_llm["request"], ModelRequest)
    assert before_llm["iteration"] == 1
    assert before_llm["stream"] is False
    assert after_llm["request"] is before_llm["request"]
    assert isinstance(after_llm["response"], ModelResponse)
    assert after_llm["response"].tool_calls[0].name == "lookup"
    assert after_llm["error"] is None
    assert seen[5][1]["iteration"] == 2
    assert seen[6][1]["response"].text == "the value is known"

    before_tool = payloads["before_tool"]
    assert (before_tool["tool_name"], before_tool["arguments"]) == ("lookup", {"key": "k"})
    assert (before_tool["tool_call_id"], before_tool["iteration"]) == ("c1", 1)
    after_tool = payloads["after_tool"]
    assert after_tool["tool_call_id"] == "c1"
    assert after_tool["result"] == "value of k"
    assert after_tool["success"] is True

    after_run = payloads["after_run"]
    assert after_run["session_id"] == "hooks"
    assert after_run["result"]["status"] == "completed"
    assert after_run["result"]["output"] == "the value is known"


async def test_failed_tool_reports_success_false() -> None:
    @tool
    def broken() -> str:
        raise RuntimeError("nope")

    def model(request: ModelRequest) -> ModelResponse | str:
        if request.messages[-1].role == "user":
            return ModelResponse.of_tool_calls(ToolCall("b1", "broken", {}))
        return "ok"

    agent = Agent(Model.function(model), tools=[broken])
    results: list[dict[str, Any]] = []
    agent.on("after_tool", lambda **payload: results.append(payload))

    await agent.run("go")

    assert [(p["success"], "nope" in p["result"]) for p in results] == [(False, True)]


async def test_async_handlers_are_awaited() -> None:
    agent = fresh_agent()
    finished: list[str] = []

    async def handler(event_name: str, **payload: Any) -> None:
        await asyncio.sleep(0.01)
        finished.append(event_name)

    agent.on("before_tool", handler)
    agent.on("after_run", handler)

    await agent.run("go")

    assert finished == ["before_tool", "after_run"]


async def test_raising_handler_is_logged_and_run_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = fresh_agent()

    def bad(**payload: Any) -> None:
        raise RuntimeError("handler bug")

    async def bad_async(**payload: Any) -> None:
        raise KeyError("async handler bug")

    agent.on("before_llm", bad)
    agent.on("after_tool", bad_async)

    with caplog.at_level(logging.ERROR, logger="loom.hooks"):
        result = await agent.run("go")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "the value is known"
    failures = [r for r in caplog.records if r.name == "loom.hooks"]
    assert len(failures) == 3  # two model calls, one tool call
    assert {r.exc_info[1].__class__ for r in failures if r.exc_info} == {RuntimeError, KeyError}
    assert any("before_llm" in r.getMessage() for r in failures)
    assert any("after_tool" in r.getMessage() for r in failures)


async def test_wildcard_receives_every_hook_alongside_named_handlers() -> None:
    agent = fresh_agent()
    named: list[str] = []
    everything: list[str] = []
    agent.on("before_tool", lambda event_name, **_: named.append(event_name))
    agent.on("*", lambda event_name, **_: everything.append(event_name))

    await agent.run("go")

    assert named == ["before_tool"]
    assert len(everything) == 8
    assert "before_tool" in everything


def test_unknown_hook_name_raises() -> None:
    agent = Agent(Model.test())
    with pytest.raises(ValueError, match="unknown hook 'before_everything'"):
        agent.on("before_everything", lambda **_: None)
    with pytest.raises(TypeError):
        agent.on("before_run", "not callable")  # type: ignore[arg-type]


async def test_off_removes_handlers() -> None:
    agent = fresh_agent()
    kept: list[str] = []
    removed: list[str] = []

    def remove_me(event_name: str, **_: Any) -> None:
        removed.append(event_name)

    agent.on("before_llm", remove_me)
    agent.on("before_llm", lambda event_name, **_: kept.append(event_name))
    agent.on("after_llm", remove_me)
    agent.off("before_llm", remove_me)
    agent.off("after_llm")

    await agent.run("go")

    assert removed == []
    assert kept == ["before_llm", "before_llm"]
    agent.off("after_llm", remove_me)  # removing what is not there is fine


async def test_run_error_fires_for_failed_runs_only() -> None:
    def failing(request: ModelRequest) -> str:
        raise ProviderError("service unavailable", status=503)

    errors: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    agent = Agent(Model.function(failing))
    agent.on("run_error", lambda **payload: errors.append(payload))
    agent.on("after_run", lambda **payload: after.append(payload))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert len(errors) == 1
    assert errors[0]["status"] == "failed"
    assert errors[0]["run_id"] == result.run_id
    assert "service unavailable" in errors[0]["error"]
    assert after[0]["result"]["status"] == "failed"

    ok_agent = fresh_agent()
    ok_errors: list[Any] = []
    ok_agent.on("run_error", lambda **payload: ok_errors.append(payload))
    await ok_agent.run("go")
    assert ok_errors == []


async def test_after_llm_reports_the_model_error() -> None:
    def failing(request: ModelRequest) -> str:
        raise RuntimeError("socket closed")

    calls: list[dict[str, Any]] = []
    agent = Agent(Model.function(failing))
    agent.on("after_llm", lambda **payload: calls.append(payload))

    await agent.run("hi")

    assert len(calls) == 1
    assert calls[0]["response"] is None
    assert "socket closed" in calls[0]["error"]


# -- events ---------------------------------------------------------------------------------


async def test_agent_stream_yields_events_in_order() -> None:
    agent = fresh_agent()

    events = [event async for event in agent.stream("go")]

    # stream() streams the model's text: the answer's tokens come before its response.
    assert [e.type for e in events] == [*EXPECTED_EVENTS[:6], "model.token", *EXPECTED_EVENTS[6:]]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    events = [e for e in events if e.type != "model.token"]
    assert len({e.run_id for e in events}) == 1
    assert events[0].payload["input"] == "go"
    started, completed = events[3], events[4]
    assert started.payload["tool_call_id"] == completed.payload["tool_call_id"] == "c1"
    assert completed.payload["output"] == "value of k"
    assert completed.payload["is_error"] is False
    assert events[2].payload["tool_calls"] == ["lookup"]
    assert events[-1].payload["output"] == "the value is known"


async def test_run_events_live_and_replayed() -> None:
    agent = fresh_agent()
    run = agent.session("events").start("go")

    live = [event async for event in run.events()]
    result = await run
    replay = [event async for event in run.events()]

    assert [e.type for e in live] == EXPECTED_EVENTS
    assert replay == live
    assert result.events == tuple(live)
    assert all(isinstance(e, RunEvent) for e in live)
    assert live[-1].to_dict()["type"] == "run.completed"


async def test_failed_run_ends_its_stream_with_run_failed() -> None:
    def failing(request: ModelRequest) -> str:
        raise ProviderError("down")

    agent = Agent(Model.function(failing))

    events = [event async for event in agent.stream("hi")]

    assert [e.type for e in events] == ["run.started", "model.request", "run.failed"]
    assert events[-1].payload["error"] == "provider error: down"


async def test_token_events_concatenate_to_the_output() -> None:
    agent = Agent(
        Model.test(call_tools=[]),
        generation=Generation(stream=True),
    )
    run = agent.session("tokens").start("tell me something fairly long please")

    events = [event async for event in run.events()]
    result = await run

    tokens = [e.payload["text"] for e in events if e.type == "model.token"]
    assert len(tokens) > 1
    assert "".join(tokens) == result.output
    assert result.output.startswith("test model reply to")
    types = [e.type for e in events]
    assert types.index("model.request") < types.index("model.token")
    assert types.index("model.token") < types.index("model.response")


async def test_no_token_events_without_streaming() -> None:
    agent = Agent(Model.test(call_tools=[]))

    events = (await agent.run("hi")).events  # run(), not stream(): a whole answer

    assert "model.token" not in [e.type for e in events]


async def test_function_model_streams_its_text() -> None:
    agent = Agent(
        Model.function(lambda request: "scripted words"), generation=Generation(stream=True)
    )
    seen: list[bool] = []
    agent.on("before_llm", lambda **payload: seen.append(payload["stream"]))

    events = [event async for event in agent.stream("hi")]

    assert [e.payload["text"] for e in events if e.type == "model.token"] == ["scripted words"]
    assert seen == [True]


async def test_two_subscribers_see_the_same_events() -> None:
    agent = fresh_agent()
    run = agent.session("two").start("go")

    async def collect() -> list[RunEvent]:
        return [event async for event in run.events()]

    first, second = await asyncio.gather(collect(), collect())

    assert first == second
    assert [e.type for e in first] == EXPECTED_EVENTS
