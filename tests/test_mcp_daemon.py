"""MCP servers in the daemon (one process, memory broker and state): a session-scoped
server lives while the worker holds the session's lease, and goes when it lets go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom import Agent, Model, ModelRequest, ModelResponse, RuntimeSignal, ToolCall
from loom.daemon.app import Daemon
from loom.policies.governance import GovernancePolicy
from loom.runtime.config import Runtime
from loom.wire import publish_signal
from tests.polling import eventually
from tests.test_daemon_memory import drain, settings
from tests.test_mcp import _alive, fake

pytestmark = pytest.mark.timeout(60)


def whoami(request: ModelRequest) -> ModelResponse:
    if request.messages[-1].role == "tool":
        return ModelResponse(text=request.messages[-1].content)
    return ModelResponse.of_tool_calls(ToolCall(f"w-{request.run_id}", "mcp__fake__whoami", {}))


async def test_a_session_server_stops_when_the_worker_lets_go_of_the_lease(
    tmp_path: Path,
) -> None:
    capability = fake(scope="session", env={"MCP_FAKE_PIDFILE": str(tmp_path / "pids")})
    agent = Agent(
        Model.function(whoami),
        capabilities=[capability],
        runtime=Runtime.sdk(governance=GovernancePolicy.allow_all()),
    )
    daemon = Daemon(agent, settings=settings())
    await daemon.start()
    try:
        pids = []
        for _ in range(2):
            await publish_signal(daemon.broker, RuntimeSignal.create("who", session_id="ops"))
            await drain(daemon, timeout=30)
            snapshot = await daemon.state.sessions.load("ops")
            assert snapshot is not None
            pid = json.loads(snapshot.runs[-1].output)["pid"]

            async def stopped(pid: int = pid) -> bool:
                return not _alive(pid)

            await eventually(stopped, "the session's server to stop", timeout=20)
            pids.append(pid)
        assert pids[0] != pids[1]  # the next run of the session started its own again
    finally:
        await daemon.stop()
