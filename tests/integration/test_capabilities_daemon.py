"""Capabilities end to end on RabbitMQ and Redis: an Alertmanager alert makes the agent
read a log file, fetch a health URL from a loopback server and ask to run a restart
command, which waits for approval over HTTP and runs once approved, once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fakes.threaded_server import ThreadedServer
from tests.integration.conftest import Cluster
from tests.integration.test_approvals_processes import TOKEN, decide, ended, paused
from tests.webhook_payloads import alertmanager

APP = "tests.integration.capabilities_app:daemon"


def health_app() -> object:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def healthz(request: object) -> PlainTextResponse:
        return PlainTextResponse("api: degraded (p99 2.3s)")

    return Starlette(routes=[Route("/healthz", healthz)])


@pytest.mark.timeout(240)
async def test_an_alert_reads_a_log_fetches_health_and_restarts_once_approved(
    cluster: Cluster, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    (root / "app.log").write_text("10:01 ERROR upstream timeout\n10:02 ERROR pool exhausted\n")
    effects = tmp_path / "restarts"
    health = ThreadedServer(health_app(), "health")
    port = health.start()
    try:
        settings = {
            "LOOM_API_TOKEN": TOKEN,
            "LOOM_TEST_ROOT": str(root),
            "LOOM_TEST_HEALTH_URL": f"http://127.0.0.1:{port}/healthz",
            "LOOM_TEST_RESTART": f"echo restarted >> {effects}",
        }
        gateway, _, _ = await cluster.start_ready(
            "gateway", "attention", "worker", app=APP, **settings
        )
        alert = alertmanager("firing")
        alert["alerts"] = alert["alerts"][:1]
        async with httpx.AsyncClient(timeout=10) as client:
            sent = await client.post(
                f"{gateway.url}/webhooks/alertmanager",
                json=alert,
                headers={"authorization": f"Bearer {TOKEN}"},
            )
        assert sent.status_code in (200, 202), sent.text
        session = "alertmanager:HighLatency"
        checkpoint = await paused(cluster, session, timeout=60)

        (approval,) = checkpoint.pending
        assert approval.tool == "run_command"
        assert approval.arguments == {"command": f"echo restarted >> {effects}"}
        seen = [m.content for m in checkpoint.transcript if m.role == "tool"]
        assert any("pool exhausted" in text for text in seen)  # the log was read
        assert any("degraded" in text for text in seen)  # the health URL was fetched
        assert not effects.exists()  # nothing ran before the approval

        answer = await decide(gateway, checkpoint, by="oncall")
        assert answer.status_code == 200, answer.text
        record = await ended(cluster, checkpoint.run_id, session=session, timeout=60)
    finally:
        health.stop()

    assert record.status == "completed", record.error
    assert effects.read_text() == "restarted\n"  # once
    assert "exit code 0" in record.output
