"""A serving process keeps what its start made out of the garbage collector's walks, and
``POST /signals`` (served before the app's middleware) answers and counts as every route."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from loom import Agent, Model
from loom.daemon.app import YOUNG_OBJECTS, Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.intake.port import Intake
from tests.polling import eventually


def daemon_with(**settings: Any) -> Daemon:
    return Daemon(Agent(Model.test()), settings=Settings(**settings))


async def serving_gateway(daemon: Daemon, caplog: pytest.LogCaptureFixture) -> asyncio.Task[None]:
    """``daemon.serve`` as the gateway, once it listens."""
    caplog.set_level(logging.INFO, logger="loom.daemon")
    serving = asyncio.create_task(daemon.serve(("gateway",)))

    async def listening() -> bool:
        assert not serving.done(), serving
        return any(r.getMessage().startswith("listening on") for r in caplog.records)

    await eventually(listening, "the gateway to listen")
    return serving


async def test_a_serving_process_freezes_what_its_start_made(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: full collections walked the start's objects at every pass (a sixth of a
    gateway's CPU) and the youngest generation was collected every 700 allocations; now the
    start's objects are frozen and young ones collected less often while the process
    serves, and both are undone at its end."""
    gc.unfreeze()
    thresholds = gc.get_threshold()
    daemon = daemon_with(http={"port": 0})
    serving = await serving_gateway(daemon, caplog)
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_OBJECTS
    finally:
        daemon.request_stop()
        await serving
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


async def test_a_cancelled_serve_undoes_the_settled_heap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: cancelling ``serve`` while it waited left the heap frozen and the youngest
    generation's threshold at ``YOUNG_OBJECTS`` for the rest of the process."""
    gc.unfreeze()
    thresholds = gc.get_threshold()
    daemon = daemon_with(http={"port": 0})
    serving = await serving_gateway(daemon, caplog)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    await daemon.stop()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


def _count(route: str, status: str) -> float:
    labels = {"route": route, "status": status}
    return REGISTRY.get_sample_value("loom_http_requests_total", labels) or 0.0


async def test_post_signals_is_answered_and_counted_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon = daemon_with()
    await daemon.broker.start()
    app = build_app(daemon, gateway=True)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
        accepted, refused = _count("/signals", "202"), _count("/signals", "422")
        response = await client.post("/signals", json={"summary": "disk full"})
        assert response.status_code == 202
        assert response.json()["status"] == "accepted"
        assert _count("/signals", "202") == accepted + 1
        response = await client.post("/signals", json={"summary": "x", "urgency": "loud"})
        assert response.status_code == 422
        assert "urgency" in response.json()["error"]
        assert _count("/signals", "422") == refused + 1
        assert (await client.get("/signals")).status_code == 405  # the router still answers

        async def broken(self: Intake, signal: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(Intake, "accept", broken)
        failed = _count("/signals", "500")
        response = await client.post("/signals", json={"summary": "disk full"})
        assert response.status_code == 500
        assert response.text == "Internal Server Error"
        assert _count("/signals", "500") == failed + 1
