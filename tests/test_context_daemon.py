"""The daemon's side of context: settings for the default agent, the stored summary and
handoff in ``GET /sessions/{id}``, compaction across runs of the worker."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from loom import (
    Agent,
    ContextProtocol,
    ContinuityPolicy,
    Model,
    ModelRequest,
    Runtime,
    RuntimeSignal,
)
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.runtime.context import SUMMARY_INSTRUCTIONS
from loom.wire import publish_signal
from tests.test_daemon_memory import drain

TOKEN = "context-test-token"


def test_settings_give_the_default_agent_its_budget_and_knowledge(tmp_path: Path) -> None:
    (tmp_path / "db.md").write_text("# Failover\nPromote the replica.")
    settings = Settings(
        model="test",
        context={"max_tokens": 50_000, "knowledge_dirs": [str(tmp_path)], "summarize": False},
    )
    agent = Daemon(settings=settings).agent
    context = agent.runtime.context
    assert context is not None
    assert context.max_tokens == 50_000
    assert context.compaction == ("shorten_tool_results", "drop_oldest_turns")
    assert agent.runtime.continuity is not None
    assert "retrieve_knowledge" in [t.name for t in agent.tools]
    assert agent.knowledge[0].documents == {"db.md": "# Failover\nPromote the replica."}
    missing = Settings(model="test", context={"knowledge_dirs": [str(tmp_path / "gone")]})
    with pytest.raises(FileNotFoundError, match="gone"):
        Daemon(settings=missing)


async def test_the_session_view_shows_the_stored_summary_and_handoff() -> None:
    def model(request: ModelRequest) -> str:
        if request.instructions == SUMMARY_INSTRUCTIONS:
            return "SUMMARY: the ops channel asked about many deploys."
        return "checked " + "c" * 300

    runtime = Runtime.sdk(
        context=ContextProtocol.manager(max_tokens=1500), continuity=ContinuityPolicy.handoff()
    )
    agent = Agent(Model.function(model), "x", runtime=runtime)
    settings = Settings(api_token=TOKEN, worker={"sweep_interval": 0.05})
    daemon = Daemon(agent, settings=settings)
    await daemon.start()
    try:
        for n in range(12):
            signal = RuntimeSignal.create(f"deploy {n} finished " + "d" * 200, session_id="ops")
            await publish_signal(daemon.broker, signal)
            await drain(daemon)
        transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://loom",
            headers={"authorization": f"Bearer {TOKEN}"},
        ) as http:
            view = (await http.get("/sessions/ops")).json()
        snapshot = await daemon.state.sessions.load("ops")
    finally:
        await daemon.stop()
    assert view["summary"]["text"] == "SUMMARY: the ops channel asked about many deploys."
    assert view["summary"]["upto"] > 0
    assert view["summary"]["upto"] % 2 == 0  # at a turn boundary: user, assistant
    assert view["handoff"]["goal"].startswith("Signals to handle:")
    assert snapshot is not None
    assert len(snapshot.messages) == 24  # every run's messages: the transcript is whole
