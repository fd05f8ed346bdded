"""Routes that are off say how to turn them on, and the startup log lists what is served."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import httpx
import pytest

from loom import Agent, Model
from loom.adapters.registry import AdapterEntry, OffRoute, register, unregister
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from tests.polling import eventually


@pytest.fixture(autouse=True)
def _no_loom_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("LOOM_")]:
        monkeypatch.delenv(name)


def daemon_with(**settings: Any) -> Daemon:
    return Daemon(Agent(Model.test()), settings=Settings(**settings))


async def post(daemon: Daemon, path: str, *, gateway: bool = True) -> httpx.Response:
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
        return await client.post(path, json={"summary": "hello"})


async def test_a_route_that_is_off_names_the_setting_that_turns_it_on() -> None:
    daemon = daemon_with()
    github = await post(daemon, "/webhooks/github")
    assert github.status_code == 404
    assert "GitHub webhook is off" in github.json()["error"]
    assert "LOOM_WEBHOOKS__GITHUB_SECRET" in github.json()["error"]
    for path in ("/slack/events", "/slack/interactions"):
        slack = await post(daemon, path)
        assert slack.status_code == 404
        assert "LOOM_SLACK__SIGNING_SECRET" in slack.json()["error"]
    unknown = await post(daemon, "/webhooks/deploys")
    assert unknown.status_code == 404
    assert "no webhook mapping named 'deploys'" in unknown.json()["error"]
    assert "LOOM_WEBHOOKS__MAPPINGS__DEPLOYS__" in unknown.json()["error"]
    # Paths no adapter serves, and processes that serve no inbound routes, keep the plain 404.
    assert (await post(daemon, "/nothing")).json()["error"] == "no route POST '/nothing'"
    worker = await post(daemon, "/webhooks/github", gateway=False)
    assert worker.json()["error"] == "no route POST '/webhooks/github'"


async def test_a_route_that_is_on_is_served_not_hinted() -> None:
    daemon = daemon_with(
        webhooks={"github_secret": "gh", "mappings": {"deploys": {"summary": "title"}}},
        slack={"signing_secret": "slack-secret"},
    )
    for path in ("/webhooks/github", "/slack/events", "/webhooks/deploys"):
        answer = await post(daemon, path)
        assert answer.status_code in (401, 422), (path, answer.text)  # the route's own answer
    assert (await post(daemon, "/webhooks/alertmanager")).status_code != 404


async def test_an_entry_registered_from_outside_declares_its_own_hint() -> None:
    register(
        AdapterEntry(
            "toy",
            lambda section, settings: [],
            off_routes=(OffRoute("/webhooks/toy", "the toy is off: set LOOM_TOY__ON"),),
        )
    )
    try:
        answer = await post(daemon_with(), "/webhooks/toy")
    finally:
        unregister("toy")
    assert answer.json()["error"] == "the toy is off: set LOOM_TOY__ON"


async def test_the_startup_log_lists_routes_adapters_and_what_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = daemon_with(http={"port": 0}, webhooks={"mappings": {"deploys": {}}})
    caplog.set_level(logging.INFO, logger="loom.daemon")
    serving = asyncio.create_task(daemon.serve(("gateway",)))

    def listening() -> bool:
        return any(r.getMessage().startswith("listening on") for r in caplog.records)

    async def check() -> bool:
        assert not serving.done(), serving
        return listening()

    await eventually(check, "the gateway to listen")
    daemon.request_stop()
    await serving
    [line] = [r for r in caplog.records if r.getMessage().startswith("serving ")]
    assert line.levelno == logging.INFO
    message = line.getMessage()
    for served in ("POST /signals", "POST /webhooks/deploys", "POST /webhooks/alertmanager"):
        assert served in message, message
    assert "GET /healthz" in message
    assert "adapters callbacks, webhook:alertmanager, webhook:deploys" in message
    assert "off /webhooks/github, /slack/events, /slack/interactions" in message
