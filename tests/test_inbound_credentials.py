"""Inbound credentials: once LOOM_API_TOKEN or LOOM_WEBHOOK_SECRET is set, every request to
an inbound route must carry a valid one; without either (development mode) the routes are
open, and the process says so at start."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from loom import Agent, Model
from loom.adapters.webhook import Webhook
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.intake.auth import Credentials
from loom.intake.context import AdapterContext
from loom.intake.signing import sign

SIGNAL = json.dumps({"summary": "disk full", "session_id": "ops"}).encode()
JSON = {"content-type": "application/json"}
FORGED = {"x-loom-timestamp": "1767225600", "x-loom-signature": "sha256=" + "0" * 64}


async def client_for(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    daemon = Daemon(Agent(Model.test()), settings=Settings(**settings))
    await daemon.start(["gateway"])
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
        yield client
    await daemon.stop()


@pytest.fixture
async def secret_only() -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(
        webhook_secret="whsec", webhooks={"mappings": {"deploys": {"summary": "title"}}}
    ):
        yield client


@pytest.fixture
async def open_gateway() -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for():
        yield client


async def test_a_forged_signature_is_refused_when_only_the_secret_is_set(
    secret_only: httpx.AsyncClient,
) -> None:
    forged = await secret_only.post("/signals", content=SIGNAL, headers={**JSON, **FORGED})
    assert forged.status_code == 401
    unsigned = await secret_only.post("/signals", content=SIGNAL, headers=JSON)
    assert unsigned.status_code == 401
    assert "X-Loom-Signature" in unsigned.json()["error"]
    signed = await secret_only.post(
        "/signals", content=SIGNAL, headers={**JSON, **sign("whsec", SIGNAL)}
    )
    assert signed.status_code == 202


async def test_a_generic_webhook_needs_the_global_secret_too(
    secret_only: httpx.AsyncClient,
) -> None:
    body = json.dumps({"title": "deployed"}).encode()
    unsigned = await secret_only.post("/webhooks/deploys", content=body, headers=JSON)
    assert unsigned.status_code == 401
    signed = await secret_only.post(
        "/webhooks/deploys", content=body, headers={**JSON, **sign("whsec", body)}
    )
    assert signed.status_code == 202


async def test_the_sessions_api_is_closed_when_only_the_secret_is_set(
    secret_only: httpx.AsyncClient,
) -> None:
    read = await secret_only.get("/sessions/ops")
    assert read.status_code == 401
    assert "LOOM_API_TOKEN" in read.json()["error"]
    feedback = await secret_only.post("/sessions/ops/feedback", json={"value": "up"})
    assert feedback.status_code == 401


async def test_with_both_either_credential_is_accepted() -> None:
    async for client in client_for(api_token="tok", webhook_secret="whsec"):
        signed = await client.post(
            "/signals", content=SIGNAL, headers={**JSON, **sign("whsec", SIGNAL)}
        )
        bearer = await client.post(
            "/signals", content=SIGNAL, headers={**JSON, "authorization": "Bearer tok"}
        )
        forged = await client.post("/signals", content=SIGNAL, headers={**JSON, **FORGED})
        assert (signed.status_code, bearer.status_code, forged.status_code) == (202, 202, 401)
        assert (await client.get("/sessions/ops")).status_code == 401
        authorized = await client.get("/sessions/ops", headers={"authorization": "Bearer tok"})
        assert authorized.status_code == 404  # let in: no such session yet


async def test_development_mode_is_open(open_gateway: httpx.AsyncClient) -> None:
    response = await open_gateway.post("/signals", content=SIGNAL, headers=JSON)
    assert response.status_code == 202
    assert (await open_gateway.get("/sessions/ops")).status_code == 404


@pytest.mark.parametrize(
    ("settings", "logged"),
    [
        ({}, "inbound routes accept unauthenticated requests (development mode, loopback only)"),
        ({"webhook_secret": "whsec"}, "the sessions API is closed"),
        ({"api_token": "tok"}, None),
    ],
)
async def test_the_start_says_how_inbound_routes_are_authenticated(
    settings: dict[str, Any], logged: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(Agent(Model.test()), settings=Settings(http={"port": 0}, **settings))
    caplog.set_level(logging.WARNING, logger="loom.daemon")
    daemon.request_stop()  # serve starts, then stops at once
    await daemon.serve(["gateway"])
    warnings = [r.getMessage() for r in caplog.records if "LOOM_API_TOKEN" in r.getMessage()]
    if logged is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert logged in warning


async def test_loom_send_signs_for_a_process_with_only_the_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from loom import RuntimeSignal
    from loom.daemon.cli import _post_to_running
    from tests.integration.conftest import free_port
    from tests.polling import eventually

    settings = Settings(webhook_secret="whsec", http={"port": free_port()})
    daemon = Daemon(Agent(Model.test()), settings=settings)
    serving = asyncio.create_task(daemon.serve(["gateway"]))
    url = f"http://127.0.0.1:{settings.http.port}/healthz"

    async def listening() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await eventually(listening, "the gateway to listen", timeout=30)
        assert await _post_to_running(settings, RuntimeSignal.create("disk full")) == 0
        assert '"accepted"' in capsys.readouterr().out
    finally:
        daemon.request_stop()
        await serving


async def test_alertmanager_shut_out_by_the_secret_alone_is_told_what_lets_it_in() -> None:
    """Alertmanager sends a bearer token and cannot sign: with only the webhook secret set,
    its 401 names LOOM_API_TOKEN instead of asking for a signature it cannot make."""
    daemon = Daemon(Agent(Model.test()), settings=Settings(webhook_secret="s3cret-for-hmac"))
    await daemon.start(["gateway"])
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
            answer = await client.post("/webhooks/alertmanager", json={"version": "4"})
    finally:
        await daemon.stop()
    assert answer.status_code == 401
    assert "set LOOM_API_TOKEN" in answer.json()["error"]
    assert "X-Loom-Signature" not in answer.json()["error"]


async def test_a_blank_credential_given_in_code_is_refused_not_taken_for_none() -> None:
    """Settings refuse a blank LOOM_API_TOKEN; code that makes a context or a webhook
    directly did not: an empty token then let in any request saying ``Bearer`` with
    nothing after it."""
    daemon = Daemon(Agent(Model.test()), settings=Settings())
    with pytest.raises(ValueError, match="LOOM_API_TOKEN is blank"):
        AdapterContext(daemon, api_token="")
    with pytest.raises(ValueError, match="signing secret is blank"):
        AdapterContext(daemon, webhook_secret="  ")
    with pytest.raises(ValueError, match="webhook deploys's token is blank"):
        Webhook("deploys", token=" ")


def test_one_decision_for_requests_with_and_without_a_body() -> None:
    both = Credentials("tok", "whsec")
    assert both.refusal({"authorization": "Bearer tok"}, None) is None
    assert both.refusal({"authorization": "Bearer tok"}, b"{}") is None
    assert both.refusal({}, b"{}") is not None
    assert both.refusal({"authorization": "Bearer "}, None) == (
        "missing or wrong bearer token (LOOM_API_TOKEN)"
    )
    secret_only = Credentials(None, "whsec")
    assert "needs a bearer token" in str(secret_only.refusal({}, None))
    assert secret_only.refusal(sign("whsec", b"{}"), b"{}") is None
    assert Credentials().refusal({}, None) is None  # development mode
