"""The offline models: TestModel, FunctionModel, and model resolution."""

from __future__ import annotations

import datetime
import subprocess
import sys
import uuid
from enum import Enum
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from loom import Agent, Model, ModelRequest, ModelResponse, RunStatus, ToolCall, tool
from loom.providers.test import FunctionModel, TestModel, example_arguments


class Color(Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    number: int
    tags: list[str] = []


def results_of(session_history: Any) -> list[Any]:
    return [m for m in session_history if m.role == "tool"]


async def test_test_model_calls_every_tool_with_valid_arguments() -> None:
    received: dict[str, dict[str, Any]] = {}

    @tool
    def numbers(count: int, ratio: float, flag: bool) -> str:
        received["numbers"] = {"count": count, "ratio": ratio, "flag": flag}
        return f"count={count}"

    @tool
    def texts(name: str, color: Color, mode: Literal["fast", "slow"]) -> str:
        received["texts"] = {"name": name, "color": color, "mode": mode}
        return f"color={color.value}"

    @tool
    def collections(ids: list[int], labels: dict[str, int], address: Address) -> str:
        received["collections"] = {"ids": ids, "labels": labels, "address": address}
        return f"street={address.street}"

    @tool
    def optionals(maybe: Optional[int], union: str | None, default: int | None = None) -> str:  # noqa: UP045
        received["optionals"] = {"maybe": maybe, "union": union, "default": default}
        return "optional ok"

    agent = Agent(Model.test(), tools=[numbers, texts, collections, optionals])
    session = agent.session("all-tools")

    result = await session.run("inspect everything")

    assert result.status is RunStatus.COMPLETED
    answers = results_of(session.history)
    assert [m.tool_name for m in answers] == ["numbers", "texts", "collections", "optionals"]
    assert [m.is_error for m in answers] == [False] * 4, [m.content for m in answers]
    assert set(received) == {"numbers", "texts", "collections", "optionals"}
    assert isinstance(received["texts"]["color"], Color)
    assert received["texts"]["mode"] == "fast"
    assert isinstance(received["collections"]["address"], Address)
    assert received["optionals"]["default"] is None
    # each tool was called exactly once, in one turn, and then the model answered
    calls = [c for m in session.history if m.role == "assistant" for c in m.tool_calls]
    assert len(calls) == 4
    assert len({c.id for c in calls}) == 4
    assert "inspect everything" in result.output
    assert "numbers returned 'count=0'" in result.output
    assert "texts returned 'color=red'" in result.output
    assert "optionals returned 'optional ok'" in result.output


async def test_test_model_satisfies_common_constraints() -> None:
    @tool
    def constrained(
        when: datetime.datetime,
        day: datetime.date,
        ident: uuid.UUID,
        limit: Annotated[int, Field(ge=1, le=100)],
        below: Annotated[int, Field(lt=0)],
        share: Annotated[float, Field(gt=0.5, lt=0.6)],
        code: Annotated[str, Field(min_length=3)],
        items: Annotated[list[int], Field(min_length=2)],
        pair: tuple[int, str],
        step: Annotated[int, Field(multiple_of=7, ge=1)],
    ) -> str:
        assert when.tzinfo is not None
        return f"limit={limit} share={share} items={len(items)} step={step}"

    agent = Agent(Model.test(), tools=[constrained])
    session = agent.session("constraints")

    result = await session.run("go")

    [answer] = results_of(session.history)
    assert answer.is_error is False, answer.content
    assert answer.content == "limit=1 share=0.55 items=2 step=7"
    assert result.status is RunStatus.COMPLETED


def test_example_arguments_fill_required_properties_only() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "string", "default": "kept"},
            "c": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
        },
        "required": ["a", "c"],
    }
    assert example_arguments(schema) == {"a": 0, "c": False}


async def test_call_tools_empty_answers_directly() -> None:
    called: list[str] = []

    @tool
    def never() -> str:
        called.append("never")
        return "no"

    seen: list[int] = []
    agent = Agent(Model.test(call_tools=[]), tools=[never])
    agent.on("before_llm", lambda **payload: seen.append(payload["iteration"]))

    result = await agent.run("just talk")

    assert result.status is RunStatus.COMPLETED
    assert called == []
    assert seen == [1]
    assert result.output == "test model reply to 'just talk'"


async def test_call_tools_by_name() -> None:
    called: list[str] = []

    @tool
    def first() -> str:
        called.append("first")
        return "1"

    @tool
    def second() -> str:
        called.append("second")
        return "2"

    agent = Agent(Model.test(call_tools=["second"]), tools=[first, second])

    result = await agent.run("pick")

    assert called == ["second"]
    assert "second returned '2'" in result.output
    assert "first" not in result.output


async def test_output_text_is_fixed() -> None:
    @tool
    def ping() -> str:
        return "pong"

    agent = Agent(Model.test(output_text="all good"), tools=[ping])

    result = await agent.run("anything")

    assert result.output == "all good"


async def test_test_model_reports_failing_tools() -> None:
    @tool
    def flaky() -> str:
        raise ConnectionError("unreachable")

    agent = Agent(Model.test(), tools=[flaky])

    result = await agent.run("try")

    assert result.status is RunStatus.COMPLETED
    assert "flaky failed" in result.output
    assert "unreachable" in result.output


async def test_test_model_is_deterministic() -> None:
    @tool
    def lookup(key: str, count: int) -> str:
        return f"{key}:{count}"

    outputs = []
    for _ in range(2):
        agent = Agent(Model.test(), tools=[lookup])
        result = await agent.run("same input")
        outputs.append((result.status, result.output, result.usage.to_dict()))

    assert outputs[0] == outputs[1]
    assert outputs[0][1] == "test model reply to 'same input'; tools: lookup returned 'a:0'"


async def test_test_model_reports_usage() -> None:
    result = await Agent(Model.test(call_tools=[])).run("count my tokens")

    assert result.usage.requests == 1
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0


async def test_function_model_sync_and_async() -> None:
    def sync_fn(request: ModelRequest) -> str:
        return f"sync saw {request.last_user_text()}"

    async def async_fn(request: ModelRequest) -> ModelResponse:
        if request.messages[-1].role == "user":
            return ModelResponse.of_tool_calls(ToolCall("t1", "double", {"n": 21}))
        return ModelResponse.of_text(f"async saw {request.messages[-1].content}")

    @tool
    def double(n: int) -> int:
        return n * 2

    sync_result = await Agent(Model.function(sync_fn)).run("one")
    async_result = await Agent(Model.function(async_fn), tools=[double]).run("two")

    assert sync_result.output == "sync saw one"
    assert async_result.output == "async saw 42"
    assert Model.function(sync_fn).name == "function:sync_fn"
    assert Model.function(sync_fn, name="scripted").name == "function:scripted"


async def test_function_model_wrong_return_type_fails_the_run() -> None:
    agent = Agent(Model.function(lambda request: 42))  # type: ignore[arg-type, return-value]

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "returned int" in result.error
    assert "expected ModelResponse or str" in result.error


async def test_function_model_estimates_usage_when_not_given() -> None:
    result = await Agent(Model.function(lambda request: "some words here")).run("hello")

    assert result.usage.requests == 1
    assert result.usage.output_tokens >= 4  # 15 characters at about four a token
    assert result.usage.input_tokens > 0


def test_model_parse_and_resolve() -> None:
    assert isinstance(Model.parse("test"), TestModel)
    assert isinstance(Model.parse("  test "), TestModel)
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        Model.parse("nope:x")
    assert isinstance(Agent("test").model, TestModel)
    assert isinstance(Agent().model, TestModel)
    function_model = Model.function(lambda request: "x")
    assert isinstance(function_model, FunctionModel)
    assert Agent(function_model).model is function_model
    with pytest.raises(TypeError, match="ModelProvider"):
        Agent(model=3.14)  # type: ignore[arg-type]


def test_import_loom_does_not_import_heavy_dependencies() -> None:
    heavy = ("aio_pika", "redis", "anthropic", "openai", "mcp")
    code = f"import loom, sys; print(','.join(m for m in {heavy!r} if m in sys.modules) or 'none')"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert completed.stdout.strip() == "none"
