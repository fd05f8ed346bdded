"""POST /signals refuses, with a 422 that says why, a signal with nothing in it and a
reply_to no adapter delivers to; a signal queued before the rule is still decided."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from loom import Agent, Model, RuntimeSignal
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.wire import decision_view, publish_signal
from tests.test_daemon_memory import drain, settings


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    daemon = Daemon(Agent(Model.test()), settings=settings(slack={"bot_token": "xoxb-test"}))
    await daemon.start(["gateway"])
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
        yield client
    await daemon.stop()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"summary": ""},
        {"summary": "   ", "payload": {}},
        {"summary": "\u2003\n", "payload": {}},
    ],
)
async def test_a_signal_with_nothing_in_it_is_refused(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/signals", json=body)
    assert response.status_code == 422
    assert "non-blank summary or a payload with at least one field" in response.json()["error"]


@pytest.mark.parametrize(
    "body", [{"summary": "disk full"}, {"payload": {"disk": "full"}}, {"payload": {"n": 0}}]
)
async def test_a_summary_or_a_payload_is_enough(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    assert (await client.post("/signals", json=body)).status_code == 202


async def test_a_reply_to_no_adapter_delivers_to_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/signals", json={"summary": "status?", "reply_to": "carrier-pigeon:42"}
    )
    assert response.status_code == 422
    problem = response.json()["error"]
    assert "'carrier-pigeon'" in problem
    assert "http://, https://, slack:" in problem


@pytest.mark.parametrize("address", ["https://example.com/hook", "slack:C1/1700000000.1"])
async def test_a_reply_to_an_adapter_delivers_to_is_accepted(
    client: httpx.AsyncClient, address: str
) -> None:
    response = await client.post("/signals", json={"summary": "status?", "reply_to": address})
    assert response.status_code == 202


async def test_an_empty_signal_queued_before_the_rule_is_still_decided() -> None:
    daemon = Daemon(Agent(Model.test()), settings=settings())
    await daemon.start()
    try:
        old = RuntimeSignal(session_id="ops")  # what the gateway accepted before
        assert old.says_nothing()
        await publish_signal(daemon.broker, old)
        await drain(daemon)
        decisions = [decision_view(d) for d in await daemon.state.decisions("ops")]
        assert [d["signal_id"] for d in decisions] == [old.id]
        assert await daemon.broker.dead_letters() == []
    finally:
        await daemon.stop()


async def test_a_reply_no_adapter_delivers_is_logged_when_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = Daemon(Agent(Model.test()), settings=settings())
    await daemon.start()
    caplog.set_level(logging.WARNING, logger="loom.replies")
    try:
        signal = RuntimeSignal.create("x", session_id="ops", reply_to="carrier-pigeon:1")
        await publish_signal(daemon.broker, signal)  # past the gateway, as before the rule
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
        [letter] = await daemon.broker.dead_letters()
        assert "carrier-pigeon" in letter.reason
        assert any("carrier-pigeon" in r.getMessage() for r in caplog.records)
    finally:
        await daemon.stop()


async def test_an_empty_reply_to_is_no_reply_to() -> None:
    """An empty ``reply_to`` (a template with nothing to fill in) asks for no reply, as the
    reply path has always read it: accepted."""
    daemon = Daemon(Agent(Model.test()), settings=settings())
    await daemon.start(["gateway"])
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
            answer = await client.post("/signals", json={"summary": "x", "reply_to": ""})
    finally:
        await daemon.stop()
    assert answer.status_code == 202, answer.text


async def test_a_gateway_without_slack_accepts_slack_addresses_for_the_workers() -> None:
    """A ``slack:`` address is a kind Loom delivers: in a split deployment the workers may
    hold the bot token the gateway lacks. An unknown kind is still refused, naming both."""
    daemon = Daemon(Agent(Model.test()), settings=settings())  # no Slack settings at all
    await daemon.start(["gateway"])
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
            slack = await client.post(
                "/signals", json={"summary": "x", "reply_to": "slack:C1/1700000000.000100"}
            )
            pigeon = await client.post(
                "/signals", json={"summary": "x", "reply_to": "carrier-pigeon:42"}
            )
    finally:
        await daemon.stop()
    assert slack.status_code == 202, slack.text
    assert pigeon.status_code == 422
    assert "http://, https://, slack:" in pigeon.json()["error"]
