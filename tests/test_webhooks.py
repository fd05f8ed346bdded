"""Webhooks in process: GitHub (signed), Alertmanager (bearer), settings mappings, HMAC on
/signals, and the accept contract (202 after the broker, 200 duplicate, 503 broker down)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from loom import Agent, Model, RuntimeSignal
from loom.adapters import Alertmanager, GitHub
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.intake.signing import hmac_sha256, sign
from tests.test_daemon_memory import drain
from tests.test_gateway_signals import published as published_raw
from tests.webhook_payloads import (
    alertmanager,
    github_ping,
    github_pull_request_opened,
    github_push,
    github_workflow_run,
)

GITHUB_SECRET = "gh-secret"
DEPLOYS = {
    "summary": "alert.title",
    "session_id": "repo.name",
    "dedupe_key": "delivery_id",
    "urgency": "level",
    "urgency_map": {"P1": "critical", "P3": "low"},
    "type": "deploy.{status}",
    "reply_to": "callback",
}


async def published(daemon: Daemon) -> list[dict[str, Any]]:
    """The signals published so far, as JSON."""
    return [dict(signal) for signal in await published_raw(daemon)]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_token": "tok",
        "webhook_secret": "whsec",
        "webhooks": {"github_secret": GITHUB_SECRET, "mappings": {"deploys": DEPLOYS}},
        "worker": {"lease_ttl": 2.0, "sweep_interval": 0.05},
    }
    values.update(overrides)
    return Settings(**values)


def client_for(daemon: Daemon) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    return httpx.AsyncClient(transport=transport, base_url="http://loom")


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    daemon = Daemon(Agent(Model.test()), settings=make_settings())
    await daemon.start(["gateway"])
    async with client_for(daemon) as client:
        yield daemon, client
    await daemon.stop()


def github_request(
    event: str, payload: dict[str, Any], delivery: str, secret: str = GITHUB_SECRET
) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    headers = {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": delivery,
        "x-hub-signature-256": "sha256=" + hmac_sha256(secret, body),
        "user-agent": "GitHub-Hookshot/044aadd",
    }
    return {"content": body, "headers": headers}


def test_hub_signature_matches_githubs_documented_test_values() -> None:
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert hmac_sha256("It's a Secret to Everybody", b"Hello, World!") == expected


# -- GitHub -------------------------------------------------------------------------------
async def test_github_push_becomes_a_low_urgency_signal_per_repository(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    request = github_request("push", github_push(), "d-push-1")
    response = await client.post("/webhooks/github", **request)
    assert response.status_code == 202, response.text
    again = await client.post("/webhooks/github", **request)  # GitHub's redelivery
    assert again.json() == {"id": response.json()["id"], "status": "duplicate"}
    [signal] = await published(daemon)
    assert (signal["source"], signal["type"], signal["urgency"]) == ("github", "github.push", "low")
    assert signal["session_id"] == "github:Codertocat/Hello-World"
    assert signal["dedupe_key"] == "github:sha256:" + hashlib.sha256(request["content"]).hexdigest()
    assert signal["payload"]["delivery"] == "d-push-1"
    assert signal["summary"] == (
        "Codertocat pushed 1 commit(s) to Codertocat/Hello-World main: Fix the health check"
    )
    assert signal["payload"]["commits"] == [
        {"id": "6113728f27ae", "message": "Fix the health check", "author": "Codertocat"}
    ]


async def test_a_captured_github_delivery_replayed_with_a_new_delivery_id_is_a_duplicate(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    """X-GitHub-Delivery (and X-GitHub-Event) are not signed: only the body decides."""
    daemon, client = gateway
    captured = github_request("push", github_push(), "d-original")
    first = await client.post("/webhooks/github", **captured)
    assert first.status_code == 202
    for delivery, event in (("d-forged-1", "push"), ("d-forged-2", "workflow_run")):
        forged = {**captured["headers"], "x-github-delivery": delivery, "x-github-event": event}
        replay = await client.post("/webhooks/github", content=captured["content"], headers=forged)
        assert replay.json() == {"id": first.json()["id"], "status": "duplicate"}
    other = github_request("pull_request", github_pull_request_opened(), "d-original")
    assert (await client.post("/webhooks/github", **other)).status_code == 202  # same id, new body
    assert len(await published(daemon)) == 2


async def test_github_pull_request_opened_is_normal_urgency(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    payload = github_pull_request_opened()
    response = await client.post(
        "/webhooks/github", **github_request("pull_request", payload, "d-pr")
    )
    assert response.status_code == 202
    [signal] = await published(daemon)
    assert signal["type"] == "github.pull_request.opened"
    assert signal["urgency"] == "normal"
    assert signal["summary"] == (
        "Pull request #2 opened by Codertocat in Codertocat/Hello-World: "
        "Update the README with new information."
    )
    assert signal["payload"]["head"] == "changes"
    assert signal["payload"]["url"] == "https://github.com/Codertocat/Hello-World/pull/2"


async def test_github_form_encoded_delivery_is_read_from_its_payload_field(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    body = urlencode({"payload": json.dumps(github_pull_request_opened())}).encode()
    response = await client.post(
        "/webhooks/github",
        content=body,
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-github-event": "pull_request",
            "x-github-delivery": "d-form",
            "x-hub-signature-256": "sha256=" + hmac_sha256(GITHUB_SECRET, body),
        },
    )
    assert response.status_code == 202
    [signal] = await published(daemon)
    assert signal["payload"]["number"] == 2


async def test_github_ping_is_answered_without_a_signal(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    response = await client.post("/webhooks/github", **github_request("ping", github_ping(), "p"))
    assert response.status_code == 200
    assert response.json() == {"status": "pong", "zen": "Keep it logically awesome."}
    assert await published(daemon) == []


async def test_github_refuses_a_missing_or_wrong_signature(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    wrong = github_request("push", github_push(), "d-1", secret="not-the-secret")
    response = await client.post("/webhooks/github", **wrong)
    assert response.status_code == 401
    assert "X-Hub-Signature-256 does not match" in response.json()["error"]
    unsigned = github_request("push", github_push(), "d-2")
    del unsigned["headers"]["x-hub-signature-256"]
    response = await client.post("/webhooks/github", **unsigned)
    assert response.status_code == 401
    # The API token is no substitute for GitHub's signature.
    unsigned["headers"]["authorization"] = "Bearer tok"
    assert (await client.post("/webhooks/github", **unsigned)).status_code == 401
    tampered = github_request("push", github_push(), "d-3")
    tampered["content"] = tampered["content"].replace(b"main", b"prod")
    assert (await client.post("/webhooks/github", **tampered)).status_code == 401
    assert await published(daemon) == []


async def test_github_without_an_event_header_is_a_bad_request(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = gateway
    request = github_request("push", github_push(), "d-x")
    del request["headers"]["x-github-event"]
    response = await client.post("/webhooks/github", **request)
    assert response.status_code == 400
    assert "X-GitHub-Event" in response.json()["error"]


async def test_a_failed_workflow_run_is_a_risk_until_the_workflow_succeeds() -> None:
    daemon = Daemon(Agent(Model.test()), settings=make_settings())
    await daemon.start()
    try:
        async with client_for(daemon) as client:
            failed = github_request("workflow_run", github_workflow_run("failure"), "d-wf-1")
            response = await client.post("/webhooks/github", **failed)
            assert response.status_code == 202
            await drain(daemon)
            session = "github:Codertocat/Hello-World"
            [(key, text)] = (await daemon.state.risks(session)).items()
            assert key == "github:Codertocat/Hello-World:workflow:159038:main"
            assert "urgency high" in text
            assert "Workflow Build #562 on main in Codertocat/Hello-World: failure" in text
            fixed = github_request("workflow_run", github_workflow_run("success"), "d-wf-2")
            assert (await client.post("/webhooks/github", **fixed)).status_code == 202
            await drain(daemon)
            assert await daemon.state.risks(session) == {}
    finally:
        await daemon.stop()


def test_github_needs_a_secret_to_serve() -> None:
    daemon = Daemon(Agent(Model.test()), adapters=[GitHub()], settings=Settings(api_token="tok"))
    with pytest.raises(ValueError, match="LOOM_WEBHOOKS__GITHUB_SECRET"):
        build_app(daemon, gateway=True)


# -- Alertmanager -------------------------------------------------------------------------
async def test_an_alert_group_is_one_signal_with_the_highest_severity(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    bearer = {"authorization": "Bearer tok"}
    response = await client.post(
        "/webhooks/alertmanager", json=alertmanager("firing"), headers=bearer
    )
    assert response.status_code == 202, response.text
    repeat = await client.post(
        "/webhooks/alertmanager", json=alertmanager("firing"), headers=bearer
    )
    assert repeat.json()["status"] == "duplicate"  # repeat_interval resends the same group
    [signal] = await published(daemon)
    assert (signal["source"], signal["type"]) == ("alertmanager", "alert.firing")
    assert signal["urgency"] == "critical"
    assert signal["session_id"] == "alertmanager:HighLatency"
    assert signal["summary"] == "[FIRING:2] HighLatency: p99 latency above 1s on api-1:8080"
    payload = signal["payload"]
    assert payload["status"] == "firing"
    assert [a["fingerprint"] for a in payload["alerts"]] == ["c2b1d6f7a6e4b0a1", "a7f3e2d1c0b9a8f7"]
    assert payload["alerts"][0]["labels"]["severity"] == "critical"
    assert payload["common_labels"] == {"alertname": "HighLatency", "job": "api"}


async def test_alertmanager_needs_the_bearer_token_and_a_v4_payload(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    unauthorized = await client.post("/webhooks/alertmanager", json=alertmanager("firing"))
    assert unauthorized.status_code == 401
    assert "LOOM_API_TOKEN" in unauthorized.json()["error"]
    old = {**alertmanager("firing"), "version": "3"}
    response = await client.post(
        "/webhooks/alertmanager", json=old, headers={"authorization": "Bearer tok"}
    )
    assert response.status_code == 422
    assert "version" in response.json()["error"]
    no_alerts = {**alertmanager("firing"), "alerts": "none"}
    response = await client.post(
        "/webhooks/alertmanager", json=no_alerts, headers={"authorization": "Bearer tok"}
    )
    assert response.status_code == 422
    assert "alerts" in response.json()["error"]
    assert await published(daemon) == []


async def test_firing_then_resolved_raises_and_clears_the_risk() -> None:
    daemon = Daemon(Agent(Model.test()), settings=make_settings())
    await daemon.start()
    bearer = {"authorization": "Bearer tok"}
    try:
        async with client_for(daemon) as client:
            firing = await client.post(
                "/webhooks/alertmanager", json=alertmanager("firing"), headers=bearer
            )
            assert firing.status_code == 202
            await drain(daemon)
            assert len(await daemon.state.risks("alertmanager:HighLatency")) == 1
            resolved = await client.post(
                "/webhooks/alertmanager", json=alertmanager("resolved"), headers=bearer
            )
            assert resolved.status_code == 202  # not a duplicate of the firing one
            await drain(daemon)
            assert await daemon.state.risks("alertmanager:HighLatency") == {}
    finally:
        await daemon.stop()


def test_alertmanager_resolved_is_low_and_keeps_the_group_risk_key() -> None:
    adapter = Alertmanager()
    firing = adapter.to_signal(json.dumps(alertmanager("firing")).encode(), {})
    resolved = adapter.to_signal(json.dumps(alertmanager("resolved")).encode(), {})
    assert isinstance(firing, RuntimeSignal)
    assert isinstance(resolved, RuntimeSignal)
    assert (resolved.type, resolved.urgency) == ("alert.resolved", "low")
    assert resolved.summary.startswith("[RESOLVED:2] HighLatency")
    assert resolved.payload["risk_key"] == firing.payload["risk_key"]
    assert resolved.session_id == firing.session_id
    assert resolved.dedupe_key != firing.dedupe_key


# -- signed requests on POST /signals -----------------------------------------------------
async def test_signals_accept_a_signature_instead_of_the_token(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    body = json.dumps({"summary": "signed", "session_id": "ops"}).encode()
    signed = await client.post("/signals", content=body, headers=sign("whsec", body))
    assert signed.status_code == 202, signed.text
    bearer = await client.post(
        "/signals", json={"summary": "bearer"}, headers={"authorization": "Bearer tok"}
    )
    assert bearer.status_code == 202
    assert [s["summary"] for s in await published(daemon)] == ["signed", "bearer"]


async def test_signals_refuse_a_bad_or_stale_signature(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    body = json.dumps({"summary": "x"}).encode()
    wrong = await client.post("/signals", content=body, headers=sign("guess", body))
    assert wrong.status_code == 401
    assert "does not match the body" in wrong.json()["error"]
    tampered = await client.post(
        "/signals", content=body.replace(b"x", b"y"), headers=sign("whsec", body)
    )
    assert tampered.status_code == 401
    stale = await client.post(
        "/signals", content=body, headers=sign("whsec", body, now=time.time() - 600)
    )
    assert stale.status_code == 401
    assert "away from this server's clock" in stale.json()["error"]
    headers = sign("whsec", body)
    del headers["x-loom-timestamp"]
    missing = await client.post("/signals", content=body, headers=headers)
    assert missing.status_code == 401
    assert "X-Loom-Timestamp" in missing.json()["error"]
    nothing = await client.post("/signals", content=body)
    assert nothing.status_code == 401
    assert "LOOM_API_TOKEN" in nothing.json()["error"]
    assert await published(daemon) == []


@pytest.mark.parametrize(
    "stamp",
    ["\u00b2", "\u00b9\u00b2", "9" * 5000, "1" * 13, "-5", "+1767225600", "1.5", "0x10", "1 2"],
)
async def test_a_malformed_timestamp_is_401_before_anything_else(
    gateway: tuple[Daemon, httpx.AsyncClient], stamp: str
) -> None:
    """ "\u00b2".isdigit() is True and int() refuses it; 5,000 digits pass isdigit() and int()
    refuses them too: both were a 500 before authentication."""
    daemon, client = gateway
    body = json.dumps({"summary": "x"}).encode()
    headers = {**sign("whsec", body), "x-loom-timestamp": stamp}
    for path in ("/signals", "/webhooks/deploys"):
        response = await client.post(
            path, content=body, headers={k: v.encode("latin-1") for k, v in headers.items()}
        )  # Starlette reads header bytes as latin-1: b"\xb2" arrives as "\u00b2"
        assert response.status_code == 401, (path, response.text)
        assert "X-Loom-Timestamp must be Unix seconds" in response.json()["error"]
    assert await published(daemon) == []


def test_verify_refuses_a_malformed_timestamp_with_a_signature_error() -> None:
    from loom.intake.signing import SignatureError, signature, verify

    for stamp in ("\u00b2", "\u0661\u0662", "9" * 5000, " "):
        headers = {"x-loom-timestamp": stamp, "x-loom-signature": signature("s", stamp, b"{}")}
        with pytest.raises(SignatureError, match="X-Loom-Timestamp"):
            verify("s", b"{}", headers)


async def test_a_signature_does_not_open_the_sessions_api(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = gateway
    response = await client.get("/sessions/ops", headers=sign("whsec", b""))
    assert response.status_code == 401


# -- broker down ----------------------------------------------------------------------------
async def test_broker_down_is_503_for_webhooks_and_the_delivery_can_be_retried(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    await daemon.broker.close()
    request = github_request("push", github_push(), "d-down")
    down = await client.post("/webhooks/github", **request)
    assert down.status_code == 503
    assert "broker unavailable" in down.json()["error"]
    bearer = {"authorization": "Bearer tok"}
    alerts = await client.post(
        "/webhooks/alertmanager", json=alertmanager("firing"), headers=bearer
    )
    assert alerts.status_code == 503
    await daemon.broker.start()
    again = await client.post("/webhooks/github", **request)
    assert again.status_code == 202  # the dedupe key was released, not burnt
