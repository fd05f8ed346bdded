"""A sub-agent's approval in the daemon (memory broker and state): the parent's pause is
kept with the child's approval, decided like any other while the worker holds the run;
past the hold the whole run tree is suspended (no slot, no lease) and resumed by the
decision, the child from its checkpoint (no model turn asked again, no call run twice),
its siblings that had finished not run again; a denial or an expiry is the child's tool
error."""

from __future__ import annotations

from typing import Any

from loom import Agent, Model, ModelRequest, ModelResponse, Runtime, RuntimeSignal, ToolCall, tool
from loom.core.checkpoints import RunCheckpoint
from loom.daemon.app import Daemon
from loom.daemon.session_view import session_view
from loom.daemon.settings import Settings
from loom.wire import publish_signal
from tests.polling import eventually
from tests.test_daemon_memory import drain

done: list[str] = []
read: list[str] = []
turns: dict[str, int] = {}


@tool(requires_approval=True)
def restart(service: str) -> str:
    """Restart a service."""
    done.append(service)
    return f"{service} restarted"


@tool
def read_logs(service: str) -> str:
    """Read a service's logs."""
    read.append(service)
    return f"{service}: all quiet"


def _count(who: str) -> None:
    turns[who] = turns.get(who, 0) + 1


def fixer(request: ModelRequest) -> ModelResponse | str:
    _count("fixer")
    results = [m for m in request.messages if m.role == "tool"]
    if not results:
        return ModelResponse.of_tool_calls(ToolCall("x1", "restart", {"service": "api"}))
    return f"fixer: {results[0].content}"


def reader(request: ModelRequest) -> ModelResponse | str:
    _count("reader")
    results = [m for m in request.messages if m.role == "tool"]
    if not results:
        return ModelResponse.of_tool_calls(ToolCall("r1", "read_logs", {"service": "api"}))
    return f"reader: {results[0].content}"


def lead(request: ModelRequest) -> ModelResponse | str:
    _count("lead")
    results = [m for m in request.messages if m.role == "tool"]
    if not results:
        calls = [ToolCall("d1", "delegate_to_fixer", {"task": "restart api"})]
        if "logs" in request.last_user_text():
            calls.append(ToolCall("d2", "delegate_to_reader", {"task": "read the api logs"}))
        return ModelResponse.of_tool_calls(*calls)
    return "lead: " + " + ".join(m.content for m in results)


def make_daemon(hold: float, *, ttl: float = 3600.0) -> Daemon:
    done.clear()
    read.clear()
    turns.clear()
    settings = Settings(
        broker_url="memory://",
        state_url="memory://",
        worker={"lease_ttl": 2.0, "sweep_interval": 0.05},
        approvals={"hold": hold, "poll": 0.02},
        api_token="tok",
    )
    child = Agent(
        Model.function(fixer), name="fixer", tools=[restart], runtime=Runtime.sdk(approval_ttl=ttl)
    )
    helper = Agent(Model.function(reader), name="reader", tools=[read_logs])
    return Daemon(Agent(Model.function(lead), subagents=[child, helper]), settings=settings)


async def last_output(daemon: Daemon) -> Any:
    snapshot = await daemon.state.sessions.load("ops")
    return snapshot.runs[-1] if snapshot is not None and snapshot.runs else None


async def suspended(daemon: Daemon) -> RunCheckpoint:
    """The tree's checkpoint once the worker let go of it (no run, no lease)."""

    async def let_go() -> RunCheckpoint | None:
        checkpoint = await daemon.state.suspensions.load("ops")
        if checkpoint is None or not checkpoint.children:
            return None
        if daemon.worker.active_sessions or await daemon.state.lease_holder("ops"):
            return None
        return checkpoint

    found: RunCheckpoint = await eventually(let_go, "the tree to be suspended", timeout=10)
    return found


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
        # The child's checkpoint is kept inside the parent's, under the delegation call.
        assert list(checkpoint.children) == ["d1"]
        assert checkpoint.children["d1"].run_id == approval.run_id != checkpoint.run_id
        await daemon.approvals.decide("ops", approval.id, "approve", by="alice")
        await drain(daemon)
        record = await last_output(daemon)
        assert record.run_id == checkpoint.run_id
        assert (record.status, record.output) == ("completed", "lead: fixer: api restarted")
        assert done == ["api"]
        assert await daemon.state.suspensions.load("ops") is None
    finally:
        await daemon.stop()


async def test_past_the_hold_the_tree_is_suspended_and_resumed_by_the_decision() -> None:
    daemon = make_daemon(hold=0.0)
    await daemon.start()
    try:
        signal = RuntimeSignal.create("fix api and read its logs", session_id="ops")
        await publish_signal(daemon.broker, signal)
        checkpoint = await suspended(daemon)
        (approval,) = checkpoint.pending
        assert approval.tool == "restart"
        # The sibling that finished is kept with the tree; the waiting child is inside it.
        assert list(checkpoint.children) == ["d1"]
        assert checkpoint.results["d2"].content == "reader: api: all quiet"
        view = await session_view(daemon.state, "ops")
        assert view is not None
        assert [a["id"] for a in view["approvals"]] == [approval.id]
        assert view["awaiting_run"] == checkpoint.run_id
        assert await last_output(daemon) is None  # not ended: waiting
        before = dict(turns)

        await daemon.approvals.decide("ops", approval.id, "approve", by="alice")
        record = await eventually(lambda: last_output(daemon), "the tree to end", timeout=10)
        await drain(daemon)
        assert record.run_id == checkpoint.run_id
        assert record.status == "completed"
        assert record.output == "lead: fixer: api restarted + reader: api: all quiet"
        assert done == ["api"]
        assert read == ["api"]  # the sibling was not run again
        # Resumed from checkpoints: one more model turn for the child and for the lead,
        # none for the sibling.
        assert turns == {"lead": before["lead"] + 1, "fixer": before["fixer"] + 1,
                         "reader": before["reader"]}  # fmt: skip
        assert await daemon.state.suspensions.load("ops") is None
    finally:
        await daemon.stop()


async def test_a_denied_childs_call_is_its_tool_error_and_the_tree_goes_on() -> None:
    daemon = make_daemon(hold=0.0)
    await daemon.start()
    try:
        await publish_signal(daemon.broker, RuntimeSignal.create("fix api", session_id="ops"))
        checkpoint = await suspended(daemon)
        (approval,) = checkpoint.pending
        await daemon.approvals.decide("ops", approval.id, "deny", message="freeze", by="bob")
        record = await eventually(lambda: last_output(daemon), "the tree to end", timeout=10)
        assert record.status == "completed"
        assert record.output.startswith("lead: fixer: tool call not run: denied by bob")
        assert "freeze" in record.output
        assert done == []
    finally:
        await daemon.stop()


async def test_an_expired_childs_approval_is_denied_as_such() -> None:
    daemon = make_daemon(hold=0.0, ttl=0.5)
    await daemon.start()
    try:
        await publish_signal(daemon.broker, RuntimeSignal.create("fix api", session_id="ops"))
        record = await eventually(lambda: last_output(daemon), "the tree to end", timeout=15)
        assert record.status == "completed"
        assert record.output.startswith("lead: fixer: tool call not run: approval expired")
        assert done == []
        assert await daemon.state.suspensions.load("ops") is None
    finally:
        await daemon.stop()
