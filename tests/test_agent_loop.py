"""The agent loop: turns, tools, limits, failures, cancellation and interruption."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from loom import (
    Agent,
    Artifact,
    AuthenticationError,
    Generation,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ProviderError,
    RunFailed,
    RunStatus,
    Runtime,
    ToolCall,
    Usage,
    tool,
)

Turn = ModelResponse | str | Callable[[ModelRequest], ModelResponse | str]


class Script:
    """A scripted model: each call takes the next turn and records the request it got."""

    def __init__(self, *turns: Turn, repeat_last: bool = False) -> None:
        self.turns = list(turns)
        self.repeat_last = repeat_last
        self.requests: list[ModelRequest] = []

    def __call__(self, request: ModelRequest) -> ModelResponse | str:
        self.requests.append(request)
        turn = self.turns[0] if self.repeat_last and len(self.turns) == 1 else self.turns.pop(0)
        return turn(request) if callable(turn) else turn


def calls(*specs: tuple[str, str, dict[str, Any]]) -> ModelResponse:
    return ModelResponse.of_tool_calls(*(ToolCall(i, n, a) for i, n, a in specs))


def tool_results(messages: Sequence[Message]) -> list[Message]:
    return [m for m in messages if m.role == "tool"]


def assert_consistent(messages: Sequence[Message]) -> None:
    """Every tool call is answered, in order, by the messages right after its turn."""
    index = 0
    while index < len(messages):
        message = messages[index]
        index += 1
        if message.role == "tool":
            raise AssertionError(f"tool result without a preceding call: {message}")
        if message.role == "assistant" and message.tool_calls:
            answers = messages[index : index + len(message.tool_calls)]
            assert [m.role for m in answers] == ["tool"] * len(message.tool_calls)
            assert [m.tool_call_id for m in answers] == [c.id for c in message.tool_calls]
            index += len(message.tool_calls)


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


# -- turns and tools ------------------------------------------------------------------------


async def test_final_answer() -> None:
    script = Script("hello there")
    agent = Agent(Model.function(script), "Be brief.")

    result = await agent.run("hi")

    assert result.status is RunStatus.COMPLETED
    assert result.ok
    assert result.output == "hello there"
    assert result.error is None
    assert len(script.requests) == 1
    request = script.requests[0]
    assert request.instructions == "Be brief."
    assert [(m.role, m.content) for m in request.messages] == [("user", "hi")]
    assert request.iteration == 1
    assert request.session_id == result.session_id
    assert request.run_id == result.run_id


async def test_tool_round_trip_reaches_next_request() -> None:
    script = Script(calls(("c1", "add", {"a": 2, "b": 3})), "the sum is 5")
    agent = Agent(Model.function(script), tools=[add])

    result = await agent.run("add 2 and 3")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "the sum is 5"
    assert [d.name for d in script.requests[0].tools] == ["add"]
    second = script.requests[1]
    assert second.iteration == 2
    assert [m.role for m in second.messages] == ["user", "assistant", "tool"]
    assert second.messages[1].tool_calls == (ToolCall("c1", "add", {"a": 2, "b": 3}),)
    answer = second.messages[2]
    assert answer.tool_call_id == "c1"
    assert answer.tool_name == "add"
    assert answer.content == "5"
    assert answer.is_error is False


async def test_concurrency_safe_tools_overlap() -> None:
    barrier = asyncio.Barrier(3)

    @tool(read_only=True)
    async def probe(n: int) -> str:
        # Passes only if all three calls are waiting at the same time.
        await asyncio.wait_for(barrier.wait(), timeout=2)
        return f"probe {n} ok"

    script = Script(
        calls(("p1", "probe", {"n": 1}), ("p2", "probe", {"n": 2}), ("p3", "probe", {"n": 3})),
        "done",
    )
    agent = Agent(Model.function(script), tools=[probe])

    result = await agent.run("probe")

    assert result.status is RunStatus.COMPLETED
    results = tool_results(script.requests[1].messages)
    assert [(m.tool_call_id, m.content, m.is_error) for m in results] == [
        ("p1", "probe 1 ok", False),
        ("p2", "probe 2 ok", False),
        ("p3", "probe 3 ok", False),
    ]


async def test_unsafe_tools_run_one_at_a_time_in_call_order() -> None:
    log: list[str] = []
    active = 0
    peak = 0

    @tool
    async def write(n: int) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        log.append(f"enter {n}")
        for _ in range(5):
            await asyncio.sleep(0)
        log.append(f"exit {n}")
        active -= 1
        return f"wrote {n}"

    script = Script(
        calls(("w1", "write", {"n": 1}), ("w2", "write", {"n": 2}), ("w3", "write", {"n": 3})),
        "done",
    )
    agent = Agent(Model.function(script), tools=[write])

    result = await agent.run("write")

    assert result.status is RunStatus.COMPLETED
    assert peak == 1
    assert log == ["enter 1", "exit 1", "enter 2", "exit 2", "enter 3", "exit 3"]
    assert [m.tool_call_id for m in tool_results(script.requests[1].messages)] == [
        "w1",
        "w2",
        "w3",
    ]


async def test_supervised_runtime_runs_safe_tools_one_at_a_time() -> None:
    active = 0
    peak = 0

    @tool(read_only=True)
    async def look(n: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(5):
            await asyncio.sleep(0)
        active -= 1
        return n

    script = Script(calls(("a", "look", {"n": 1}), ("b", "look", {"n": 2})), "done")
    agent = Agent(Model.function(script), tools=[look], runtime=Runtime.supervised())

    result = await agent.run("look")

    assert result.status is RunStatus.COMPLETED
    assert peak == 1


async def test_raising_tool_gives_error_result_and_run_completes() -> None:
    @tool
    def explode() -> str:
        raise ValueError("boom went the tool")

    script = Script(calls(("e1", "explode", {})), "recovered")
    agent = Agent(Model.function(script), tools=[explode])

    result = await agent.run("try it")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "recovered"
    [answer] = tool_results(script.requests[1].messages)
    assert answer.is_error is True
    assert "ValueError" in answer.content
    assert "boom went the tool" in answer.content


async def test_invalid_arguments_name_the_field() -> None:
    script = Script(
        calls(("c1", "add", {"a": "not a number", "b": 1}), ("c2", "add", {"a": 1})),
        "ok",
    )
    agent = Agent(Model.function(script), tools=[add])

    result = await agent.run("add")

    assert result.status is RunStatus.COMPLETED
    wrong_type, missing = tool_results(script.requests[1].messages)
    assert wrong_type.is_error
    assert "'add'" in wrong_type.content
    assert "a: " in wrong_type.content
    assert "not a number" in wrong_type.content
    assert missing.is_error
    assert "b: Field required" in missing.content


async def test_unknown_tool_gives_error_result() -> None:
    script = Script(calls(("c1", "launch_rockets", {})), "fine")
    agent = Agent(Model.function(script), tools=[add])

    result = await agent.run("go")

    assert result.status is RunStatus.COMPLETED
    [answer] = tool_results(script.requests[1].messages)
    assert answer.is_error
    assert "unknown tool 'launch_rockets'" in answer.content
    assert "add" in answer.content


async def test_malformed_raw_arguments_give_error_result() -> None:
    bad = ModelResponse.of_tool_calls(ToolCall("c1", "add", raw_arguments="{not json"))
    script = Script(bad, "fine")
    agent = Agent(Model.function(script), tools=[add])

    result = await agent.run("go")

    assert result.status is RunStatus.COMPLETED
    [answer] = tool_results(script.requests[1].messages)
    assert answer.is_error
    assert "not a JSON object" in answer.content
    assert "{not json" in answer.content


# -- limits ---------------------------------------------------------------------------------


async def test_iteration_limit_fails_the_run() -> None:
    counter = 0

    def always_tools(request: ModelRequest) -> ModelResponse:
        nonlocal counter
        counter += 1
        return calls((f"c{counter}", "add", {"a": 1, "b": 1}))

    agent = Agent(Model.function(always_tools), tools=[add], runtime=Runtime.sdk(max_iterations=3))
    session = agent.session("limit")

    result = await session.run("loop forever")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "max iterations" in result.error
    assert counter == 3
    assert len(tool_results(session.history)) == 3
    assert_consistent(session.history)


async def test_run_timeout_fails_and_leaves_consistent_transcript() -> None:
    started = asyncio.Event()

    @tool
    async def hang() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    script = Script(calls(("h1", "hang", {}), ("h2", "add", {"a": 1, "b": 2})), "unused")
    agent = Agent(Model.function(script), tools=[hang, add], runtime=Runtime.sdk(timeout=0.2))
    session = agent.session("timeout")

    result = await session.run("wait")

    assert started.is_set()
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "timed out" in result.error
    assert result.artifacts == ()
    history = session.history
    assert_consistent(history)
    answers = tool_results(history)
    assert [m.tool_call_id for m in answers] == ["h1", "h2"]
    assert all(m.is_error for m in answers)


async def test_slow_model_times_out() -> None:
    async def slow(request: ModelRequest) -> str:
        await asyncio.Event().wait()
        return "never"

    agent = Agent(Model.function(slow), runtime=Runtime.sdk(timeout=0.1))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error == "run timed out after 0.1s"


async def test_tool_timeout_gives_error_result_and_run_completes() -> None:
    @tool
    async def stuck() -> str:
        await asyncio.Event().wait()
        return "never"

    script = Script(calls(("s1", "stuck", {})), "gave up on it")
    agent = Agent(Model.function(script), tools=[stuck], runtime=Runtime.sdk(tool_timeout=0.1))

    result = await agent.run("go")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "gave up on it"
    [answer] = tool_results(script.requests[1].messages)
    assert answer.is_error
    assert "timed out" in answer.content
    assert "stuck" in answer.content


async def test_long_tool_result_is_truncated_with_a_note() -> None:
    @tool
    def big() -> str:
        return "x" * 250

    script = Script(calls(("b1", "big", {})), "ok")
    agent = Agent(
        Model.function(script), tools=[big], runtime=Runtime.sdk(max_tool_result_chars=100)
    )

    await agent.run("go")

    [answer] = tool_results(script.requests[1].messages)
    assert answer.content.startswith("x" * 100)
    assert answer.content.count("x") == 100
    assert "[truncated: 150 more characters]" in answer.content


# -- failures -------------------------------------------------------------------------------


def raising(exc: Exception) -> Callable[[ModelRequest], ModelResponse]:
    def fn(request: ModelRequest) -> ModelResponse:
        raise exc

    return fn


async def test_authentication_error_fails_the_run() -> None:
    agent = Agent(Model.function(raising(AuthenticationError("bad key", status=401))))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "authentication failed" in result.error
    assert "bad key" in result.error
    assert result.output == ""


async def test_provider_error_fails_with_reason() -> None:
    error = ProviderError("overloaded", provider="acme", status=529, retryable=True)
    agent = Agent(Model.function(raising(error)))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error == "provider error: acme: overloaded (HTTP 529)"


async def test_generic_exception_fails_with_reason() -> None:
    agent = Agent(Model.function(raising(RuntimeError("kaput"))))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error == "model call failed: RuntimeError: kaput"


async def test_max_tokens_stop_reason_fails_as_truncated() -> None:
    script = Script(ModelResponse(text="half an ans", stop_reason="max_tokens"))
    agent = Agent(Model.function(script))

    result = await agent.run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "truncated" in result.error
    assert result.artifacts == ()


async def test_provider_failure_after_tools_keeps_transcript_consistent() -> None:
    script = Script(calls(("c1", "add", {"a": 1, "b": 2})), raising(ProviderError("down")))
    agent = Agent(Model.function(script), tools=[add])
    session = agent.session("fail-late")

    result = await session.run("go")

    assert result.status is RunStatus.FAILED
    assert result.error == "provider error: down"
    assert_consistent(session.history)
    assert [m.content for m in tool_results(session.history)] == ["3"]


# -- cancel and interrupt -------------------------------------------------------------------


async def test_cancel_during_slow_tool() -> None:
    started = asyncio.Event()

    @tool(read_only=True)
    async def slow(n: int) -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    script = Script(calls(("s1", "slow", {"n": 1}), ("s2", "slow", {"n": 2})), "unused")
    agent = Agent(Model.function(script), tools=[slow])
    session = agent.session("cancel")

    run = session.start("go")
    await asyncio.wait_for(started.wait(), 1)
    assert run.cancel("user pressed stop") is True
    result = await asyncio.wait_for(run.wait(), 1)

    assert result.status is RunStatus.CANCELLED
    assert result.error == "user pressed stop"
    assert run.status is RunStatus.CANCELLED
    assert run.cancel() is False
    assert run.interrupt() is False
    history = session.history
    assert_consistent(history)
    assert [m.tool_call_id for m in tool_results(history)] == ["s1", "s2"]
    assert all(m.is_error for m in tool_results(history))
    assert len(script.requests) == 1
    assert not session.busy


async def test_session_is_usable_after_cancel() -> None:
    started = asyncio.Event()

    @tool
    async def slow() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    script = Script(calls(("s1", "slow", {})), "second run answer")
    agent = Agent(Model.function(script), tools=[slow])
    session = agent.session("again")

    run = session.start("first")
    await asyncio.wait_for(started.wait(), 1)
    run.cancel()
    await run

    result = await session.run("second")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "second run answer"
    request = script.requests[-1]
    assert_consistent(request.messages)
    assert [m.role for m in request.messages] == ["user", "assistant", "tool", "user"]


async def test_cancel_on_finished_run_returns_false() -> None:
    agent = Agent(Model.function(lambda request: "done"))
    run = agent.session("s").start("hi")

    result = await run

    assert result.status is RunStatus.COMPLETED
    assert run.cancel() is False
    assert run.interrupt() is False
    assert (await run.wait()).status is RunStatus.COMPLETED


async def test_interrupt_stops_at_next_boundary() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    ran: list[str] = []

    @tool
    async def step(name: str) -> str:
        ran.append(name)
        started.set()
        await release.wait()
        return f"{name} done"

    script = Script(
        calls(("a", "step", {"name": "first"}), ("b", "step", {"name": "second"})), "unused"
    )
    agent = Agent(Model.function(script), tools=[step])
    session = agent.session("interrupt")

    run = session.start("go")
    await asyncio.wait_for(started.wait(), 1)
    assert run.interrupt("new priorities") is True
    release.set()
    result = await asyncio.wait_for(run.wait(), 1)

    assert result.status is RunStatus.INTERRUPTED
    assert result.error == "new priorities"
    assert ran == ["first"]  # the second call was never started
    assert len(script.requests) == 1
    history = session.history
    assert_consistent(history)
    first, second = tool_results(history)
    assert (first.content, first.is_error) == ("first done", False)
    assert second.is_error
    assert "not run" in second.content


async def test_cancel_of_a_queued_run() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @tool
    async def block() -> str:
        started.set()
        await release.wait()
        return "released"

    prompts: list[str] = []

    def model(request: ModelRequest) -> ModelResponse | str:
        prompts.append(request.last_user_text())
        if request.messages[-1].role == "user" and request.last_user_text() == "first":
            return calls(("b1", "block", {}))
        return f"answer to {request.last_user_text()}"

    agent = Agent(Model.function(model), tools=[block])
    session = agent.session("queue")

    first = session.start("first")
    await asyncio.wait_for(started.wait(), 1)
    second = session.start("second")
    await asyncio.sleep(0)  # let it start waiting for its turn
    assert second.cancel("not needed") is True
    cancelled = await asyncio.wait_for(second.wait(), 1)

    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.error == "not needed"
    assert not first.done()

    release.set()
    done = await asyncio.wait_for(first.wait(), 1)
    assert done.status is RunStatus.COMPLETED
    assert "second" not in prompts
    assert not session.busy


async def test_cancel_right_after_start_does_not_hang() -> None:
    agent = Agent(Model.function(lambda request: "done"))
    session = agent.session("eager")

    run = session.start("hi")
    assert run.cancel("changed my mind") is True  # before the run's task took a step
    result = await asyncio.wait_for(run.wait(), 1)

    assert result.status is RunStatus.CANCELLED
    assert result.error == "changed my mind"
    assert not session.busy
    assert session.history == ()
    assert (await session.run("again")).status is RunStatus.COMPLETED


async def test_cancel_while_after_run_hook_is_running_does_not_hang() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_audit(**payload: Any) -> None:
        entered.set()
        await release.wait()

    agent = Agent(Model.function(lambda request: "done"))
    agent.on("after_run", slow_audit)

    run = agent.session("late").start("hi")
    await asyncio.wait_for(entered.wait(), 1)
    assert run.cancel() is False  # the outcome is already decided
    release.set()
    result = await asyncio.wait_for(run.wait(), 1)

    assert result.status is RunStatus.COMPLETED
    assert result.output == "done"


# -- runtime, generation, usage, results ----------------------------------------------------


def test_runtime_presets_differ_and_accept_overrides() -> None:
    presets = {
        "sdk": Runtime.sdk(),
        "long_running": Runtime.long_running(),
        "supervised": Runtime.supervised(),
        "autonomous": Runtime.autonomous(),
    }
    assert {name: r.max_iterations for name, r in presets.items()} == {
        "sdk": 32,
        "long_running": 128,
        "supervised": 80,
        "autonomous": 200,
    }
    assert {name: r.name for name, r in presets.items()} == {n: n for n in presets}
    assert presets["supervised"].max_parallel_tools == 1

    custom = Runtime.sdk(max_iterations=10, timeout=60)
    assert (custom.max_iterations, custom.timeout, custom.name) == (10, 60.0, "sdk")
    long = Runtime.long_running(criteria=["cite sources"], max_iterations=5)
    assert (long.max_iterations, long.criteria, long.timeout) == (5, ("cite sources",), 3600.0)
    with pytest.raises(ValidationError):
        Runtime.sdk(max_iterations=0)
    with pytest.raises(ValidationError):
        Runtime.sdk(no_such_setting=1)


async def test_runtime_criteria_reach_request_instructions() -> None:
    script = Script("ok")
    runtime = Runtime.long_running(criteria=["cite sources", "be kind"])
    agent = Agent(Model.function(script), "You research.", runtime=runtime)

    await agent.run("question")

    instructions = script.requests[0].instructions
    assert instructions.startswith("You research.")
    assert "- cite sources" in instructions
    assert "- be kind" in instructions
    assert all("cite sources" not in m.content for m in script.requests[0].messages)


async def test_generation_reaches_the_request() -> None:
    generation = Generation(
        temperature=0.3, max_output_tokens=123, stop=("END",), extensions={"seed": 7}
    )
    script = Script("ok")
    agent = Agent(Model.function(script), generation=generation)

    await agent.run("hi")

    assert script.requests[0].generation == generation
    assert script.requests[0].generation.extensions == {"seed": 7}


async def test_usage_sums_over_model_calls() -> None:
    script = Script(
        ModelResponse.of_tool_calls(
            ToolCall("c1", "add", {"a": 1, "b": 1}),
            usage=Usage(input_tokens=10, output_tokens=5, cache_read_tokens=2, requests=1),
        ),
        ModelResponse(text="2", usage=Usage(input_tokens=30, output_tokens=1, requests=1)),
    )
    agent = Agent(Model.function(script), tools=[add])
    session = agent.session("usage")

    result = await session.run("1+1")

    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (40, 6, 2)
    assert (usage.cache_write_tokens, usage.requests) == (0, 2)
    assert result.usage.total_tokens == 46
    assert session.usage.input_tokens == 40


async def test_completed_run_has_text_artifact() -> None:
    agent = Agent(Model.function(lambda request: "the answer"))
    run = agent.session("art").start("q")

    result = await run

    assert result.artifacts == (Artifact("text", f"run://{result.run_id}/output", "the answer"),)
    assert await run.artifacts() == result.artifacts
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.finished_at >= result.started_at
    assert result.duration >= 0


async def test_raise_for_status() -> None:
    ok = await Agent(Model.function(lambda request: "fine")).run("hi")
    assert ok.raise_for_status() is ok

    failed = await Agent(Model.function(raising(ProviderError("nope")))).run("hi")
    with pytest.raises(RunFailed, match=r"failed: provider error: nope"):
        failed.raise_for_status()


async def test_test_model_runs_end_to_end_with_tools() -> None:
    agent = Agent(Model.test(), tools=[add])

    result = await agent.run("sum things")

    assert result.status is RunStatus.COMPLETED
    assert "sum things" in result.output
    assert "add returned '0'" in result.output
