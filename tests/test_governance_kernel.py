"""GovernancePolicy through the agent loop: what the model sees, what runs, what waits."""

from __future__ import annotations

from typing import Any

from loom import (
    Agent,
    GovernancePolicy,
    Model,
    ModelRequest,
    ModelResponse,
    RunStatus,
    Runtime,
    ToolCall,
    tool,
)


def calling(*calls: ToolCall) -> Any:
    def script(request: ModelRequest) -> ModelResponse | str:
        if request.iteration == 1:
            return ModelResponse.of_tool_calls(*calls)
        return "\n".join(m.content for m in request.messages if m.role == "tool")

    return script


ran: list[str] = []


@tool(read_only=True)
def status(service: str) -> str:
    """Read a service's status."""
    ran.append(f"status {service}")
    return f"{service} up"


@tool
def restart(service: str) -> str:
    """Restart a service."""
    ran.append(f"restart {service}")
    return f"{service} restarted"


@tool(destructive=True)
def delete(service: str) -> str:
    """Delete a service."""
    ran.append(f"delete {service}")
    return f"{service} deleted"


@tool(requires_approval=lambda call: call.arguments.get("service") == "db")
def migrate(service: str) -> str:
    """Migrate a service's schema."""
    ran.append(f"migrate {service}")
    return f"{service} migrated"


def agent_with(runtime: Runtime, *calls: ToolCall) -> Agent:
    ran.clear()
    return Agent(
        Model.function(calling(*calls)),
        tools=[status, restart, delete, migrate],
        runtime=runtime,
    )


async def test_the_default_policy_refuses_destructive_tools_and_the_model_reads_why() -> None:
    agent = agent_with(Runtime.sdk(), ToolCall("c1", "delete", {"service": "api"}))

    result = await agent.run("clean up")

    assert result.status is RunStatus.COMPLETED
    assert ran == []
    assert "tool call denied (destructive)" in result.output


async def test_read_only_mode_runs_reads_only() -> None:
    policy = GovernancePolicy.default(read_only=True)
    agent = agent_with(
        Runtime.sdk(governance=policy),
        ToolCall("c1", "status", {"service": "api"}),
        ToolCall("c2", "restart", {"service": "api"}),
    )

    result = await agent.run("look")

    assert ran == ["status api"]
    assert "tool call denied (read_only)" in result.output


async def test_a_rate_limit_is_a_tool_error_past_the_limit() -> None:
    policy = GovernancePolicy.default(rate_limits={"status": "2/minute"})
    agent = agent_with(
        Runtime.sdk(governance=policy),
        *(ToolCall(f"c{i}", "status", {"service": f"s{i}"}) for i in range(3)),
    )

    result = await agent.run("look")

    assert len(ran) == 2
    assert "rate limit" in result.output
    denied = [e for e in result.events if e.type == "tool.denied"]
    assert [e.payload["rule"] for e in denied] == ["rate_limit"]


async def test_a_tool_rule_on_arguments_asks_for_approval_only_when_it_matches() -> None:
    agent = agent_with(
        Runtime.sdk(),
        ToolCall("c1", "migrate", {"service": "web"}),
        ToolCall("c2", "migrate", {"service": "db"}),
    )
    run = agent.session("ops").start("migrate")

    paused = await run.wait()

    assert paused.status is RunStatus.AWAITING_APPROVAL
    assert [a.arguments for a in paused.approvals] == [{"service": "db"}]
    run.approve(paused.approvals[0].id)
    assert (await run.wait()).status is RunStatus.COMPLETED
    assert ran == ["migrate web", "migrate db"]


async def test_supervised_asks_for_every_tool_that_is_not_read_only() -> None:
    agent = agent_with(
        Runtime.supervised(),
        ToolCall("c1", "status", {"service": "api"}),
        ToolCall("c2", "restart", {"service": "api"}),
    )
    run = agent.session("ops").start("fix")

    paused = await run.wait()

    assert [a.tool for a in paused.approvals] == ["restart"]
    run.deny(paused.approvals[0].id, "not now")
    result = await run.wait()
    assert ran == ["status api"]
    assert "not now" in result.output


async def test_policy_approval_globs_ask_and_the_deny_list_wins() -> None:
    policy = GovernancePolicy.default(require_approval=["rest*"], deny=["status"])
    agent = agent_with(
        Runtime.sdk(governance=policy),
        ToolCall("c1", "status", {"service": "api"}),
        ToolCall("c2", "restart", {"service": "api"}),
    )
    run = agent.session("ops").start("fix")

    paused = await run.wait()
    assert [a.tool for a in paused.approvals] == ["restart"]
    run.approve(paused.approvals[0].id)
    result = await run.wait()

    assert ran == ["restart api"]
    assert "tool call denied (deny)" in result.output
