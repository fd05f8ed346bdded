"""The runnable examples work as the README shows them."""

from __future__ import annotations

import importlib
import os
import sys

import httpx
import pytest

from loom.daemon.http import build_app
from tests.test_daemon_memory import drain


async def test_ops_daemon_turns_a_ci_webhook_into_a_completed_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [k for k in os.environ if k.startswith("LOOM_")]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOOM_SLACK__SIGNING_SECRET", "example-signing-secret")
    monkeypatch.setenv("LOOM_SLACK__BOT_TOKEN", "xoxb-example")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sys.modules.pop("examples.ops_daemon", None)
    example = importlib.import_module("examples.ops_daemon")
    daemon = example.daemon
    assert {a.name for a in daemon.adapters} >= {"slack", "webhook:deploys", "cron:health"}
    await daemon.start(("gateway", "attention", "worker"))
    try:
        app = build_app(daemon, gateway=True)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
            answer = await client.post("/webhooks/deploys", json={"title": "deploy 7 failed"})
            assert answer.status_code == 202, answer.text
        await drain(daemon)
        snapshot = await daemon.state.sessions.load(daemon.settings.default_session)
        assert snapshot is not None
        [run] = snapshot.runs
        assert run.status == "completed"
        assert "deploy 7 failed" in run.output
    finally:
        await daemon.stop()
