"""MCP tools against a real MCP server (tests/fakes/mcp_server.py) over stdio: shared
connections, restarts, list changes, governance, timeouts and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, Capability, Model, ModelRequest, ModelResponse, RunStatus, ToolCall
from loom.policies.governance import GovernancePolicy
from loom.runtime.config import Runtime
from loom.tools.mcp_config import MCPServerConfig
from loom.tools.mcp_connection import MCPUnavailableError
from loom.tools.mcp_names import loom_tool_name
from tests.polling import eventually

ROOT = Path(__file__).resolve().parent.parent
SERVER = ["-m", "tests.fakes.mcp_server"]
pytestmark = pytest.mark.timeout(60)


def fake(name: str = "fake", **options: Any) -> Capability:
    options.setdefault("require_approval", False)
    env = {"PYTHONPATH": str(ROOT), **options.pop("env", {})}
    return Capability.mcp(
        name, command=sys.executable, args=SERVER, cwd=str(ROOT), env=env, **options
    )


class Script:
    """A model that makes the given calls on its first turn, then answers with the tool
    results; it records every request's tool names."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []
        self.offered: list[list[str]] = []

    def __call__(self, request: ModelRequest) -> ModelResponse | str:
        self.offered.append([t.name for t in request.tools])
        if request.iteration == 1 and self.calls:
            return ModelResponse.of_tool_calls(*self.calls)
        results = [m for m in request.messages if m.role == "tool"][-len(self.calls) :]
        return json.dumps([m.content for m in results])


def agent_with(*capabilities: Capability, **runtime: Any) -> tuple[Agent, Script]:
    script = Script()
    governance = runtime.pop("governance", GovernancePolicy.allow_all())
    agent = Agent(
        Model.function(script),
        capabilities=capabilities,
        runtime=Runtime.sdk(governance=governance, **runtime),
    )
    return agent, script


async def call(agent: Agent, script: Script, session: str, *calls: ToolCall) -> list[Any]:
    script.calls = list(calls)
    result = await agent.session(session).run("go")
    assert result.status is RunStatus.COMPLETED, result.error
    return [_json_or_text(text) for text in json.loads(result.output)]


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def tc(tool: str, **arguments: Any) -> ToolCall:
    return ToolCall(f"c_{tool}_{len(arguments)}", f"mcp__fake__{tool}", arguments)


# -- names and configuration ------------------------------------------------------------
def test_names_are_valid_for_every_provider_deterministic_and_distinct() -> None:
    assert loom_tool_name("k8s", "delete_pod") == "mcp__k8s__delete_pod"
    dotted, underscored = loom_tool_name("gh", "repo.list"), loom_tool_name("gh", "repo_list")
    assert underscored == "mcp__gh__repo_list"
    assert dotted != underscored
    assert dotted == loom_tool_name("gh", "repo.list")
    long_a, long_b = loom_tool_name("s", "a" * 80), loom_tool_name("s", "a" * 81)
    for name in (dotted, long_a, long_b):
        assert len(name) <= 64
        assert all(c.isalnum() or c in "_-" for c in name)
    assert long_a != long_b


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "exactly one of command="),
        ({"command": "x", "url": "http://h"}, "exactly one of command="),
        ({"url": "http://h", "headers": {"Authorization": ""}}, "header 'Authorization' is empty"),
        ({"url": "ftp://h"}, "must be http:// or https://"),
        ({"command": "x", "call_timeout": 0}, "call_timeout must be positive"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(
    options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Capability.mcp("srv", **options)


def test_a_bad_server_name_is_refused() -> None:
    with pytest.raises(ValueError, match="the name must be"):
        MCPServerConfig(name="has space", command="x")


# -- calls ------------------------------------------------------------------------------
async def test_tools_are_offered_and_called_with_structured_content_as_json() -> None:
    agent, script = agent_with(fake())
    async with agent:
        (added, error) = await call(
            agent, script, "s1", tc("add", a=2, b=3), tc("fail", message="no")
        )
        assert added == {"result": 5}
        assert "mcp__fake__add" in script.offered[0]
        assert "no" in error
        assert "failed" in error


async def test_two_sessions_share_one_server_process() -> None:
    agent, script = agent_with(fake())
    async with agent:
        (first,) = await call(agent, script, "a", tc("whoami"))
        (second,) = await call(agent, script, "b", tc("whoami"))
        assert first["pid"] == second["pid"]
        # The child gets a minimal environment plus what the capability passed.
        assert "PYTHONPATH" in first["env"]
        assert "LOOM_TEST_SECRET" not in first["env"]


async def test_session_scope_gives_each_session_its_own_server() -> None:
    agent, script = agent_with(fake(scope="session"))
    async with agent:
        (first,) = await call(agent, script, "a", tc("whoami"))
        (again,) = await call(agent, script, "a", tc("whoami"))
        (second,) = await call(agent, script, "b", tc("whoami"))
        assert first["pid"] == again["pid"] != second["pid"]


async def test_a_crashed_server_is_restarted_and_the_next_call_succeeds() -> None:
    agent, script = agent_with(fake())
    async with agent:
        (before,) = await call(agent, script, "s", tc("whoami"))
        (crashed,) = await call(agent, script, "s", tc("crash"))
        assert "connection closed during the call" in crashed
        (added,) = await call(agent, script, "s", tc("add", a=1, b=1))
        (after,) = await call(agent, script, "s", tc("whoami"))
        assert added == {"result": 2}
        assert after["pid"] != before["pid"]


async def test_a_new_tool_appears_in_the_next_model_request() -> None:
    agent, script = agent_with(fake())
    async with agent:
        await call(agent, script, "s", tc("add_tool", name="echo2"))
        assert "mcp__fake__echo2" not in script.offered[-1]

        async def listed() -> bool:
            return agent.tools.get("mcp__fake__echo2") is not None

        await eventually(listed, "the new tool in the agent's list")
        requests_before = len(script.offered)
        (echoed,) = await call(agent, script, "s", tc("echo2", text="hi"))
        assert "mcp__fake__echo2" in script.offered[requests_before]
        assert echoed == {"result": "hi"}


async def test_no_tools_list_on_any_run_after_warm_up() -> None:
    agent, script = agent_with(fake())
    async with agent:
        (lists_before,) = await call(agent, script, "s", tc("count_lists"))
        for session in ("s", "t", "u"):
            await call(agent, script, session, tc("add", a=1, b=2))
        (lists_after,) = await call(agent, script, "v", tc("count_lists"))
        assert lists_before == lists_after == {"result": 1}


async def test_arguments_that_do_not_fit_the_schema_are_refused_locally() -> None:
    agent, script = agent_with(fake())
    async with agent:
        (refused,) = await call(agent, script, "s", tc("add", a="x"))
        assert refused.startswith("invalid arguments for tool 'mcp__fake__add'")
        assert "'x' is not of type 'integer'" in refused
        assert "'b' is a required" in refused


async def test_a_call_timeout_is_a_tool_error_and_the_connection_stays_usable() -> None:
    agent, script = agent_with(fake(call_timeout=0.5))
    async with agent:
        (before,) = await call(agent, script, "s", tc("whoami"))
        (slow,) = await call(agent, script, "s", tc("sleep", seconds=5))
        assert "did not answer 'sleep' within 0.5s" in slow
        (after,) = await call(agent, script, "s", tc("whoami"))
        assert after["pid"] == before["pid"]


async def test_a_large_output_is_cut_to_the_runs_limit() -> None:
    agent, script = agent_with(fake(), max_tool_result_chars=1000)
    async with agent:
        (big,) = await call(agent, script, "s", tc("big", size=200_000))
        assert "[truncated:" in big
        assert len(big) < 1200


async def test_calls_from_many_sessions_run_concurrently_on_one_connection() -> None:
    agent, script = agent_with(fake())
    async with agent:
        await call(agent, script, "warm", tc("add", a=0, b=0))
        script.calls = [tc("whoami")]
        sessions = [agent.session(f"s{i}") for i in range(20)]
        results = await asyncio.gather(*(session.run("go") for session in sessions))
        pids = {json.loads(json.loads(r.output)[0])["pid"] for r in results}
        assert len(pids) == 1
        assert all(r.status is RunStatus.COMPLETED for r in results)


async def test_calls_in_flight_on_one_connection_are_bounded() -> None:
    agent, script = agent_with(fake(max_in_flight=2))
    async with agent:
        script.calls = [tc("sleep", seconds=0.2)]
        await asyncio.gather(*(agent.session(f"s{i}").run("go") for i in range(6)))
        (most,) = await call(agent, script, "s", tc("most_active"))
        assert most == {"result": 2}


async def test_a_server_that_keeps_failing_is_degraded_and_fails_fast() -> None:
    from prometheus_client import REGISTRY

    agent, script = agent_with(Capability.mcp("flaky", command="false"))
    async with agent:
        capability = agent.capabilities[0]
        await agent.tools.prepare()  # the first start fails; the supervisor goes on trying

        async def degraded() -> bool:
            return bool(capability.status()["degraded"])  # type: ignore[index]

        await eventually(degraded, "the server to be reported degraded", timeout=30)
        assert REGISTRY.get_sample_value("loom_mcp_server_degraded", {"server": "flaky"}) == 1
        script.calls = [ToolCall("c1", "mcp__flaky__anything", {})]
        result = await agent.session("s").run("go")
        assert "MCP server 'flaky' is unavailable" in result.output


# -- governance -------------------------------------------------------------------------
async def test_tools_not_marked_read_only_by_the_user_wait_for_approval() -> None:
    agent, script = agent_with(fake(require_approval=None, read_only=["whoami"]))
    async with agent:
        await agent.tools.prepare()
        add, whoami = agent.tools.get("mcp__fake__add"), agent.tools.get("mcp__fake__whoami")
        assert add is not None
        assert whoami is not None
        # The server says add is read-only; only the user's word counts.
        assert (add.read_only, add.requires_approval) == (False, True)
        assert (whoami.read_only, whoami.requires_approval) == (True, False)

        script.calls = [tc("add", a=20, b=22)]
        run = agent.session("s").start("go")
        paused = await run.wait()
        assert paused.status is RunStatus.AWAITING_APPROVAL
        (approval,) = paused.approvals
        assert (approval.tool, approval.arguments) == ("mcp__fake__add", {"a": 20, "b": 22})
        run.approve(approval.id)
        result = await run.wait()
        assert result.status is RunStatus.COMPLETED
        assert json.loads(json.loads(result.output)[0]) == {"result": 42}


async def test_a_destructive_hint_tightens_even_a_tool_marked_read_only() -> None:
    agent, script = agent_with(
        fake(read_only=["drop_table"]), governance=GovernancePolicy.default()
    )
    async with agent:
        await agent.tools.prepare()
        drop = agent.tools.get("mcp__fake__drop_table")
        assert drop is not None
        assert drop.destructive
        assert not drop.read_only
        (denied,) = await call(agent, script, "s", tc("drop_table", table="users"))
        assert "denied" in denied


async def test_tools_and_exclude_select_what_the_agent_is_offered() -> None:
    agent, _ = agent_with(fake(tools=["add", "sle*"], exclude=["sleep"]))
    async with agent:
        await agent.tools.prepare()
        assert [t.name for t in agent.tools] == ["mcp__fake__add"]


# -- bad commands -----------------------------------------------------------------------
async def test_a_missing_command_fails_start_when_connect_is_true() -> None:
    agent, _ = agent_with(Capability.mcp("nope", command="no-such-mcp-server", connect=True))
    with pytest.raises(MCPUnavailableError, match="'no-such-mcp-server' not found"):
        await agent.start()
    await agent.aclose()


async def test_a_missing_command_is_a_clear_tool_error_when_lazy() -> None:
    agent, script = agent_with(Capability.mcp("nope", command="no-such-mcp-server"))
    async with agent:
        script.calls = [ToolCall("c1", "mcp__nope__anything", {})]
        result = await agent.session("s").run("go")
        assert result.status is RunStatus.COMPLETED
        assert "'no-such-mcp-server' not found" in result.output


async def test_closing_the_agent_stops_the_server(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    agent, script = agent_with(fake(env={"MCP_FAKE_PIDFILE": str(pidfile)}))
    async with agent:
        (me,) = await call(agent, script, "s", tc("whoami"))
    assert not _alive(me["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent to reap it.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"
