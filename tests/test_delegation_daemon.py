"""A sub-agent's approval in the daemon (memory broker and state): the parent's pause is
kept with the child's approval, decided like any other while the worker holds the run;
past the hold the child is stopped and the parent told, and nothing crashes."""

from __future__ import annotations

from typing import Any

from loom import Agent, Model, ModelRequest, ModelResponse, RuntimeSignal, ToolCall, tool
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.runtime.delegation import SUSPENDED
from loom.wire import publish_signal
from tests.polling import eventually
from tests.test_daemon_memory import drain

done: list[str] = []


@tool(requires_approval=True)
def restart(service: str) -> str:
    """Restart a service."""
    done.append(service)
    return f"{service} restarted"


def fixer(request: ModelRequest) -> ModelResponse | str:
    results = [m for m in request.messages if m.role == "tool"]
    if not results:
        return ModelResponse.of_tool_calls(ToolCall("x1", "restart", {"service": "api"}))
    return results[0].content


def lead(request: ModelRequest) -> ModelResponse | str:
    results = [m for m in request.messages if m.role == "tool"]
    if not results:
        return ModelResponse.of_tool_calls(
            ToolCall("d1", "delegate_to_fixer", {"task": "restart api"})
        )
    return f"lead: {results[0].content}"


def make_daemon(hold: float) -> Daemon:
    done.clear()
    settings = Settings(
        broker_url="memory://",
        state_url="memory://",
        worker={"lease_ttl": 2.0, "sweep_interval": 0.05},
        approvals={"hold": hold, "poll": 0.02},
        api_token="tok",
    )
    child = Agent(Model.function(fixer), name="fixer", tools=[restart])
    return Daemon(Agent(Model.function(lead), subagents=[child]), settings=settings)


async def last_output(daemon: Daemon) -> Any:
    snapshot = await daemon.state.sessions.load("ops")
    return snapshot.runs[-1] if snapshot is not None and snapshot.runs else None


async def test_a_childs_approval_is_decided_while_the_worker_holds_the_run() -> None:
    daemon = make_daemon(hold=30.0)
    await daemon.start()
    try:
        await publish_signal(daemon.broker, RuntimeSignal.create("fix api", session_id="ops"))
        checkpoint = await eventually(
            lambda: daemon.state.suspensions.load("ops"), "the tree to pause", timeout=10
        )
        (approval,) = checkpoint.pending
        assert (approval.tool, approval.arguments) == ("restart", {"service": "api"})
        await daemon.approvals.decide("ops", approval.id, "approve", by="alice")
        await drain(daemon)
        record = await last_output(daemon)
        assert record.run_id == checkpoint.run_id
        assert (record.status, record.output) == ("completed", "lead: api restarted")
        assert done == ["api"]
        assert await daemon.state.suspensions.load("ops") is None
    finally:
        await daemon.stop()


async def test_past_the_hold_the_child_stops_and_the_parent_is_told() -> None:
    daemon = make_daemon(hold=0.0)
    await daemon.start()
    try:
        await publish_signal(daemon.broker, RuntimeSignal.create("fix api", session_id="ops"))
        record = await eventually(lambda: last_output(daemon), "the run to end", timeout=10)
        await drain(daemon)
        assert record.status == "completed"
        assert SUSPENDED in record.output
        assert done == []
        assert await daemon.state.suspensions.load("ops") is None
    finally:
        await daemon.stop()
