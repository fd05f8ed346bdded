"""Delegation to sub-agents: child runs with their own id, depth, history, instructions and
tools, under the parent's session and governance, in parallel up to a bound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from loom import (
    Agent,
    DelegationPolicy,
    Model,
    ModelRequest,
    ModelResponse,
    RunStatus,
    Runtime,
    ToolCall,
    Usage,
    tool,
)


def delegating(*calls: tuple[str, str], answer: str = "all done") -> Callable[..., Any]:
    """A parent model: first turn delegates ``(tool, task)`` calls, then answers with the
    tool results it got."""

    def model(request: ModelRequest) -> ModelResponse:
        results = [m for m in request.messages if m.role == "tool"]
        if not results:
            return ModelResponse.of_tool_calls(
                *(ToolCall(f"d{i}", name, {"task": task}) for i, (name, task) in enumerate(calls)),
                usage=Usage(requests=1, input_tokens=10),
            )
        shown = " | ".join(m.content for m in results)
        return ModelResponse(f"{answer}: {shown}", usage=Usage(requests=1, input_tokens=10))

    return model


def answering(text: str, seen: list[ModelRequest] | None = None) -> Callable[..., Any]:
    def model(request: ModelRequest) -> ModelResponse:
        if seen is not None:
            seen.append(request)
        return ModelResponse(text, usage=Usage(requests=1, input_tokens=3, output_tokens=2))

    return model


def outcomes(agent: Agent) -> list[dict[str, Any]]:
    """The results of every run of ``agent``, as its ``after_run`` hook sees them."""
    seen: list[dict[str, Any]] = []
    agent.on("after_run", lambda **payload: seen.append(payload["result"]))
    return seen


async def test_a_child_is_a_real_run_and_only_its_answer_returns() -> None:
    seen: list[ModelRequest] = []

    @tool
    def read_log(name: str) -> str:
        """Read a log."""
        return f"{name}: 3 errors"

    def reader_model(request: ModelRequest) -> ModelResponse | str:
        seen.append(request)
        if not any(m.role == "tool" for m in request.messages):
            return ModelResponse.of_tool_calls(ToolCall("r1", "read_log", {"name": "api"}))
        return "the api log has 3 errors"

    reader = Agent(Model.function(reader_model), "You read logs.", tools=[read_log],
                   name="log_reader")  # fmt: skip
    ran = outcomes(reader)
    parent_model = delegating(("delegate_to_log_reader", "summarise the api log"))
    parent = Agent(Model.function(parent_model), "You triage.", subagents=[reader])

    run = parent.session("ops").start("what broke?")
    result = await run.wait()

    assert result.status is RunStatus.COMPLETED
    assert result.output == "all done: the api log has 3 errors"
    # The child: its own instructions, its own tools, a fresh history holding only its task.
    assert seen[0].instructions == "You read logs."
    assert [t.name for t in seen[0].tools] == ["read_log"]
    assert [(m.role, m.content) for m in seen[0].messages] == [("user", "summarise the api log")]
    [child] = ran
    assert child["session_id"] == "ops"
    assert child["parent_run_id"] == run.id
    assert child["depth"] == 1
    assert child["run_id"] != run.id
    started = next(e for e in result.events if e.type == "subagent.started")
    assert started.payload["child_run_id"] == child["run_id"]
    # Only the answer came back: the child's tool output is not in the parent's history.
    assert "3 errors" not in " ".join(
        m.content for m in parent.session("ops").history if m.role != "assistant"
    ).replace("the api log has 3 errors", "")


async def test_two_children_of_one_turn_run_in_parallel_at_depth_two() -> None:
    both_running = asyncio.Barrier(2)

    async def meeting(request: ModelRequest) -> str:
        # Each child waits here for the other: only children running at once get past.
        async with asyncio.timeout(5):
            await both_running.wait()
        return f"done {request.messages[0].content}"

    leaf = Agent(Model.function(answering("leaf answer")), name="leaf")
    deep = Agent(Model.function(answering("x")), name="deep", subagents=[leaf])
    left_seen: list[ModelRequest] = []

    def left_model(request: ModelRequest) -> Any:
        left_seen.append(request)
        if not any(m.role == "tool" for m in request.messages):
            return ModelResponse.of_tool_calls(
                ToolCall("l1", "delegate_to_deep", {"task": "go deeper"})
            )
        return meeting(request)

    left = Agent(Model.function(left_model), name="left", subagents=[deep])
    right = Agent(Model.function(meeting), name="right")
    deep_ran, leaf_ran = outcomes(deep), outcomes(leaf)
    parent = Agent(
        Model.function(delegating(("delegate_to_left", "L"), ("delegate_to_right", "R"))),
        subagents=[left, right],
        runtime=Runtime.sdk(delegation=DelegationPolicy.depth_limited(2, max_parallel=2)),
    )

    result = await parent.run("split the work")

    assert result.status is RunStatus.COMPLETED, result.error
    assert "done L" in result.output
    assert "done R" in result.output
    # left (depth 1) was offered its sub-agent; deep (depth 2) was not: the limit is 2.
    assert "delegate_to_deep" in [t.name for t in left_seen[0].tools]
    assert [(r["depth"], r["status"]) for r in deep_ran] == [(2, "completed")]
    assert leaf_ran == []


async def test_the_depth_limit_hides_the_delegation_tool() -> None:
    inner_seen: list[ModelRequest] = []
    leaf = Agent(Model.function(answering("leaf")), name="leaf")
    inner = Agent(Model.function(answering("inner", inner_seen)), name="inner", subagents=[leaf])
    parent_seen: list[ModelRequest] = []

    def parent_model(request: ModelRequest) -> Any:
        parent_seen.append(request)
        return delegating(("delegate_to_inner", "work"))(request)

    parent = Agent(
        Model.function(parent_model),
        subagents=[inner],
        runtime=Runtime.sdk(delegation=DelegationPolicy.depth_limited(1)),
    )

    result = await parent.run("go")

    assert result.status is RunStatus.COMPLETED
    assert [t.name for t in parent_seen[0].tools] == ["delegate_to_inner"]
    assert [t.name for t in inner_seen[0].tools] == []  # depth 1 of 1: nothing to delegate
    # On its own, the inner agent is depth 0 and does offer its sub-agent.
    alone: list[ModelRequest] = []
    solo = Agent(Model.function(answering("x", alone)), name="solo", subagents=[leaf],
                 runtime=Runtime.sdk(delegation=DelegationPolicy.depth_limited(1)))  # fmt: skip
    await solo.run("go")
    assert [t.name for t in alone[0].tools] == ["delegate_to_leaf"]


async def test_a_call_past_the_depth_limit_is_refused() -> None:
    leaf = Agent(Model.function(answering("leaf")), name="leaf")
    leaf_ran = outcomes(leaf)

    def inner_model(request: ModelRequest) -> Any:
        return delegating(("delegate_to_leaf", "sneak"))(request)  # offered nothing, tries

    inner = Agent(Model.function(inner_model), name="inner", subagents=[leaf])
    parent = Agent(Model.function(delegating(("delegate_to_inner", "work"))), subagents=[inner])

    result = await parent.run("go")

    assert result.status is RunStatus.COMPLETED
    assert "delegation refused: depth 1 is the limit (1)" in result.output
    assert leaf_ran == []


@pytest.mark.parametrize("stop", ["cancel", "interrupt"])
async def test_cancel_and_interrupt_reach_a_running_child(stop: str) -> None:
    child_started = asyncio.Event()

    async def slow(request: ModelRequest) -> str:
        child_started.set()
        await asyncio.sleep(30)
        return "too late"

    @tool
    async def wait_a_bit() -> str:
        """Wait."""
        child_started.set()
        await asyncio.sleep(0.05)
        return "waited"

    def child_model(request: ModelRequest) -> Any:
        if stop == "interrupt":
            if any(m.role == "tool" for m in request.messages):
                return "should not get here"
            return ModelResponse.of_tool_calls(ToolCall("w", "wait_a_bit", {}))
        return slow(request)

    child = Agent(Model.function(child_model), name="worker", tools=[wait_a_bit])
    ran = outcomes(child)
    parent = Agent(Model.function(delegating(("delegate_to_worker", "work"))),
                   subagents=[child])  # fmt: skip
    run = parent.session("s").start("go")
    await asyncio.wait_for(child_started.wait(), 5)
    if stop == "cancel":
        assert run.cancel("stop it")
    else:
        assert run.interrupt("new alert")
    result = await asyncio.wait_for(run.wait(), 5)

    if stop == "cancel":
        assert result.status is RunStatus.CANCELLED
        assert [(r["status"], r["error"]) for r in ran] == [("cancelled", "stop it")]
    else:
        assert result.status is RunStatus.INTERRUPTED
        assert [(r["status"], r["error"]) for r in ran] == [("interrupted", "new alert")]


async def test_usage_and_cost_roll_up() -> None:
    a = Agent(Model.function(answering("a")), name="a")
    b = Agent(Model.function(answering("b")), name="b")
    parent = Agent(
        Model.function(delegating(("delegate_to_a", "1"), ("delegate_to_b", "2"))),
        subagents=[a, b],
    )

    result = await parent.run("go")

    assert result.status is RunStatus.COMPLETED
    assert result.usage.requests == 4  # two parent turns, one turn per child
    assert result.usage.input_tokens == 10 + 10 + 3 + 3
    assert result.usage.output_tokens == 4
    completed = [e for e in result.events if e.type == "subagent.completed"]
    assert sorted(e.payload["usage"]["requests"] for e in completed) == [1, 1]


async def test_a_child_waiting_for_approval_pauses_the_parent_on_it() -> None:
    done: list[str] = []

    @tool(requires_approval=True)
    def restart(service: str) -> str:
        """Restart a service."""
        done.append(service)
        return f"{service} restarted"

    def fixer_model(request: ModelRequest) -> Any:
        results = [m for m in request.messages if m.role == "tool"]
        if not results:
            return ModelResponse.of_tool_calls(ToolCall("x1", "restart", {"service": "api"}))
        return results[0].content

    fixer = Agent(Model.function(fixer_model), name="fixer", tools=[restart])
    parent = Agent(Model.function(delegating(("delegate_to_fixer", "fix api"))),
                   subagents=[fixer])  # fmt: skip

    run = parent.session("ops").start("fix it")
    paused = await asyncio.wait_for(run.wait(), 5)

    assert paused.status is RunStatus.AWAITING_APPROVAL
    [approval] = paused.approvals
    assert (approval.tool, approval.arguments) == ("restart", {"service": "api"})
    assert done == []
    parent.session("ops").approve(approval.id, by="alice")
    result = await asyncio.wait_for(run.wait(), 5)

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == "all done: api restarted"
    assert done == ["api"]


async def test_a_child_is_governed_by_its_parents_policy() -> None:
    from loom import GovernancePolicy

    ran: list[str] = []

    @tool
    def poke() -> str:
        """Poke."""
        ran.append("poke")
        return "poked"

    def child_model(request: ModelRequest) -> Any:
        results = [m for m in request.messages if m.role == "tool"]
        if not results:
            return ModelResponse.of_tool_calls(ToolCall("p", "poke", {}))
        return results[0].content

    child = Agent(Model.function(child_model), name="poker", tools=[poke])
    parent = Agent(
        Model.function(delegating(("delegate_to_poker", "poke"))),
        subagents=[child],
        runtime=Runtime.sdk(governance=GovernancePolicy.default(deny=["poke"])),
    )

    result = await parent.run("go")

    assert ran == []
    assert "tool call denied (deny)" in result.output


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Agent("test", name="ops", subagents=[Agent("test", name="ops")]), "itself"),
        (
            lambda: Agent("test", subagents=[Agent("test", name="a"), Agent("test", name="a")]),
            "two sub-agents are named 'a'",
        ),
        (lambda: Agent("test", subagents=[Agent("test", name="bad name")]), "sub-agent name"),
        (lambda: Agent("test", subagents=Agent("test", name="x")), "a list of Agents"),
        (lambda: Agent("test", subagents=["helper"]), "must be an Agent"),
        (lambda: DelegationPolicy.depth_limited(0), "depth must be an integer of at least 1"),
        (lambda: DelegationPolicy.depth_limited(2, max_parallel=0), "max_parallel"),
        (lambda: Runtime.autonomous(max_depth=0), "max_depth"),
    ],
)
def test_bad_delegation_is_refused_when_the_agent_is_built(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


async def test_a_tree_two_deep_is_suspended_whole_and_resumed_from_its_checkpoints() -> None:
    """In one process: a grandchild's approval pauses its tree; suspended, the top run's
    checkpoint holds its child's, which holds the grandchild's; resumed from it (as a worker
    would, in a new Run), no model turn is asked again and the approved call runs once."""
    done: list[str] = []
    turns: list[str] = []

    @tool(requires_approval=True)
    def restart(service: str) -> str:
        """Restart a service."""
        done.append(service)
        return f"{service} restarted"

    def counted(name: str, model: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(request: ModelRequest) -> Any:
            turns.append(name)
            return model(request)

        return wrapped

    def fixer_model(request: ModelRequest) -> Any:
        results = [m for m in request.messages if m.role == "tool"]
        if not results:
            return ModelResponse.of_tool_calls(ToolCall("x1", "restart", {"service": "api"}))
        return results[0].content

    fixer = Agent(Model.function(counted("fixer", fixer_model)), name="fixer", tools=[restart])
    middle = Agent(
        Model.function(counted("middle", delegating(("delegate_to_fixer", "fix"), answer="mid"))),
        name="middle",
        subagents=[fixer],
    )
    top = Agent(
        Model.function(counted("top", delegating(("delegate_to_middle", "go"), answer="top"))),
        subagents=[middle],
        runtime=Runtime.sdk(delegation=DelegationPolicy.depth_limited(2)),
    )
    session = top.session("ops")
    run = session.start("fix it")
    paused = await asyncio.wait_for(run.wait(), 5)
    assert paused.status is RunStatus.AWAITING_APPROVAL
    assert run.suspend()
    suspended = await asyncio.wait_for(run.wait(), 5)

    assert suspended.status is RunStatus.AWAITING_APPROVAL
    checkpoint = suspended.checkpoint
    assert checkpoint is not None
    (approval,) = checkpoint.pending
    (child,) = checkpoint.children.values()
    (grandchild,) = child.children.values()
    assert approval.run_id == grandchild.run_id
    assert grandchild.calls[0].name == "restart"
    assert turns == ["top", "middle", "fixer"]
    assert done == []
    events = [e.type for e in suspended.events]
    assert "subagent.suspended" in events

    decided = checkpoint.with_approval(approval.decide("approve", by="alice"))
    resumed = session.resume(decided)
    result = await asyncio.wait_for(resumed.wait(), 5)
    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == "top: mid: api restarted"
    assert done == ["api"]
    # One more turn each, after the tool's result: none of the first turns asked again.
    assert turns == ["top", "middle", "fixer", "fixer", "middle", "top"]
    assert result.usage.requests == len(turns)  # each call counted once, across the resume
    assert "subagent.resumed" in [e.type for e in result.events]
