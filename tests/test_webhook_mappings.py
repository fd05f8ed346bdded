"""Generic webhooks: mappings declared in settings (env, TOML), webhooks given in code, their
credentials, and the 4xx answers that say what is wrong."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from loom import Agent, Model, RuntimeSignal, SignalAdapter
from loom.adapters import Webhook
from loom.adapters.webhook_mapping import lookup
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.intake.signing import sign
from tests.test_gateway_signals import published as published_raw
from tests.test_webhooks import DEPLOYS, client_for, make_settings

BEARER = {"authorization": "Bearer tok"}


async def published(daemon: Daemon) -> list[dict[str, Any]]:
    """The signals published so far, as JSON."""
    return [dict(signal) for signal in await published_raw(daemon)]


def deploy(**changes: Any) -> dict[str, Any]:
    event = {
        "delivery_id": 42,
        "status": "failed",
        "level": "P1",
        "alert": {"title": "Deploy of payments failed", "env": "prod"},
        "repo": {"name": "payments api"},
        "callback": "https://ci.example.com/hooks/loom",
    }
    event.update(changes)
    return event


async def running(
    settings: Settings, adapters: tuple[Webhook, ...] = ()
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    daemon = Daemon(Agent(Model.test()), adapters=adapters, settings=settings)
    await daemon.start(["gateway"])
    async with client_for(daemon) as client:
        yield daemon, client
    await daemon.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    async for pair in running(make_settings()):
        yield pair


async def test_a_settings_mapping_end_to_end(gateway: tuple[Daemon, httpx.AsyncClient]) -> None:
    daemon, client = gateway
    response = await client.post("/webhooks/deploys", json=deploy(), headers=BEARER)
    assert response.status_code == 202, response.text
    again = await client.post("/webhooks/deploys", json=deploy(), headers=BEARER)
    assert again.json()["status"] == "duplicate"
    [signal] = await published(daemon)
    assert signal["summary"] == "Deploy of payments failed"
    assert (signal["source"], signal["type"]) == ("deploys", "deploy.failed")
    assert signal["urgency"] == "critical"
    assert signal["session_id"] == "payments-api"  # a space cannot be in a session id
    assert signal["dedupe_key"] == "deploys:42"
    assert signal["reply_to"] == "https://ci.example.com/hooks/loom"
    assert signal["payload"] == deploy()


async def test_urgency_is_mapped_passed_through_or_defaulted(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    for n, level in enumerate(["P3", "HIGH", None]):
        event = deploy(delivery_id=n, level=level)
        assert (await client.post("/webhooks/deploys", json=event, headers=BEARER)).is_success
    assert [s["urgency"] for s in await published(daemon)] == ["low", "high", "normal"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (deploy(alert={}), "summary: path 'alert.title' is not in the body"),
        ({**deploy(), "status": None}, "type: path 'status' is not in the body"),
        (deploy(level="P9"), "'P9', which is not low, normal, high or critical"),
        (deploy(repo={"name": "x" * 300}, callback="y" * 3000), "reply_to"),
        ([1, 2], "must be a JSON object, not list"),
        (b"{not json", "not JSON"),
    ],
)
async def test_mapping_failures_say_what_is_wrong(
    gateway: tuple[Daemon, httpx.AsyncClient], body: Any, message: str
) -> None:
    daemon, client = gateway
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post("/webhooks/deploys", content=content, headers=BEARER)
    assert response.status_code == 422
    assert message in response.json()["error"]
    assert await published(daemon) == []


async def test_settings_webhooks_need_the_token_or_a_signature_and_limit_the_body(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = gateway
    assert (await client.post("/webhooks/deploys", json=deploy())).status_code == 401
    body = json.dumps(deploy()).encode()
    signed = await client.post("/webhooks/deploys", content=body, headers=sign("whsec", body))
    assert signed.status_code == 202  # LOOM_WEBHOOK_SECRET signs webhooks too
    too_big = await client.post("/webhooks/deploys", content=b"x" * 2_000_000, headers=BEARER)
    assert too_big.status_code == 413
    assert (await client.post("/webhooks/nowhere", json={}, headers=BEARER)).status_code == 404


async def test_mappings_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = "LOOM_WEBHOOKS__MAPPINGS__BUILDS__"
    monkeypatch.setenv(f"{prefix}SUMMARY", "build.message")
    monkeypatch.setenv(f"{prefix}SESSION_ID", "build.project")
    monkeypatch.setenv(f"{prefix}URGENCY", "high")
    monkeypatch.setenv(f"{prefix}TYPE", "build.{build.result}")
    monkeypatch.setenv(f"{prefix}SECRET", "builds-secret")
    settings = Settings()
    async for daemon, client in running(settings):
        body = json.dumps(
            {"build": {"message": "nightly broke", "project": "etl", "result": "error"}}
        ).encode()
        response = await client.post(
            "/webhooks/builds", content=body, headers=sign("builds-secret", body)
        )
        assert response.status_code == 202, response.text
        assert (await client.post("/webhooks/builds", content=body)).status_code == 401
        [signal] = await published(daemon)
        assert (signal["summary"], signal["session_id"]) == ("nightly broke", "etl")
        assert (signal["type"], signal["urgency"]) == ("build.error", "high")


def test_mappings_from_a_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "loom.toml"
    config.write_text(
        """
[webhooks]
github_secret = "s3cret"
callback_allow_private = true

[webhooks.mappings.grafana]
summary = "title"
session_id = "ruleName"
urgency = "state"
urgency_map = { alerting = "high", ok = "low" }
type = "grafana.{state}"
"""
    )
    monkeypatch.setenv("LOOM_CONFIG", str(config))
    webhooks = Settings().webhooks
    assert webhooks.github_secret is not None
    assert webhooks.github_secret.get_secret_value() == "s3cret"
    assert webhooks.callback_allow_private is True
    grafana = webhooks.mappings["grafana"]
    assert (grafana.summary, grafana.urgency_map) == ("title", {"alerting": "high", "ok": "low"})
    signal = Webhook.from_settings("grafana", grafana).to_signal(
        b'{"title": "CPU", "ruleName": "cpu", "state": "alerting"}', {}
    )
    assert isinstance(signal, RuntimeSignal)
    assert (signal.type, signal.urgency, signal.session_id) == ("grafana.alerting", "high", "cpu")


@pytest.mark.parametrize(
    ("mappings", "message"),
    [
        ({"GitHub": {}}, "use a-z"),
        ({"github": {}}, "taken by the built-in adapter"),
        ({"x": {"summary": "a..b"}}, "not a dotted path"),
        ({"x": {"urgency_map": {"P1": "panic"}}}, "urgency_map"),
    ],
)
def test_bad_mappings_are_refused_at_startup(mappings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(webhooks={"mappings": mappings})


async def test_webhooks_given_in_code_with_their_own_credentials() -> None:
    by_adapter = Webhook(
        "ci",
        SignalAdapter(source="ci", type="build", summary=lambda e: e["text"]),
        secret="ci-secret",
    )
    by_function = Webhook(
        "raw",
        lambda event: RuntimeSignal.create(event["text"], source="raw", urgency="high"),
        token="raw-token",
    )
    async for daemon, client in running(make_settings(), (by_adapter, by_function)):
        body = b'{"text": "build 7 failed"}'
        assert (
            await client.post("/webhooks/ci", content=body, headers=sign("ci-secret", body))
        ).status_code == 202
        stale = sign("ci-secret", body, now=time.time() - 3600)
        assert (await client.post("/webhooks/ci", content=body, headers=stale)).status_code == 401
        own = {"authorization": "Bearer raw-token"}
        assert (await client.post("/webhooks/raw", content=body, headers=own)).status_code == 202
        # Its own token replaces LOOM_API_TOKEN for this webhook.
        assert (await client.post("/webhooks/raw", content=body, headers=BEARER)).status_code == 401
        failing = await client.post("/webhooks/raw", json={"other": 1}, headers=own)
        assert failing.status_code == 422
        assert "KeyError('text')" in failing.json()["error"]
        first, second = await published(daemon)
        assert (first["source"], first["summary"]) == ("ci", "build 7 failed")
        assert (second["source"], second["urgency"]) == ("raw", "high")


async def test_without_any_credential_a_webhook_is_open_like_post_signals() -> None:
    settings = Settings(webhooks={"mappings": {"deploys": DEPLOYS}})
    async for daemon, client in running(settings):
        assert (await client.post("/webhooks/deploys", json=deploy())).status_code == 202
        assert len(await published(daemon)) == 1


def test_paths_index_lists_and_treat_null_as_missing() -> None:
    event = {"alerts": [{"labels": {"env": "prod"}}], "gone": None}
    assert lookup(event, "alerts.0.labels.env") == "prod"
    assert lookup(event, "alerts.1.labels.env") is lookup(event, "gone")
    with pytest.raises(ValueError, match="webhook name"):
        Webhook("Bad Name")
