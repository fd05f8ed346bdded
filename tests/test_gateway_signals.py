"""POST /signals in process: RuntimeSignal JSON, CloudEvents, duplicates, errors, draining."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from loom import Agent, Model
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    daemon = Daemon(Agent(Model.test()), settings=Settings(api_token="tok"))
    await daemon.start(["gateway"])
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    headers = {"authorization": "Bearer tok"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://loom", headers=headers
    ) as client:
        yield daemon, client
    await daemon.stop()


async def published(daemon: Daemon) -> list[dict[str, object]]:
    from loom.wire import ATTENTION_QUEUE

    letters: list[dict[str, object]] = []

    async def take(delivery):  # type: ignore[no-untyped-def]
        letters.append(json.loads(delivery.body))
        await delivery.ack()

    tag = await daemon.broker.consume(ATTENTION_QUEUE, take)
    await daemon.broker.join()  # type: ignore[attr-defined]
    await daemon.broker.cancel(tag)
    return letters


async def test_signal_json_is_accepted_after_publishing(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    response = await client.post("/signals", json={"summary": "disk full", "session_id": "ops"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    [signal] = await published(daemon)
    assert signal["id"] == body["id"]
    assert signal["summary"] == "disk full"


async def test_repeated_dedupe_key_answers_duplicate(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    first = await client.post("/signals", json={"summary": "a", "dedupe_key": "k1"})
    again = await client.post("/signals", json={"summary": "a", "dedupe_key": "k1"})
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "status": "duplicate"}
    assert len(await published(daemon)) == 1


async def test_structured_and_binary_cloudevents(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    structured = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "urn:ci",
        "type": "build.failed",
        "time": "2026-11-24T10:00:00Z",
        "loomsession": "ops",
        "loomurgency": "high",
        "data": {"summary": "build 9 failed", "job": 9},
    }
    response = await client.post(
        "/signals",
        content=json.dumps(structured),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 202
    binary = await client.post(
        "/signals",
        content=json.dumps({"text": "deploy done"}),
        headers={
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "e-2",
            "ce-source": "urn:cd",
            "ce-type": "deploy.done",
        },
    )
    assert binary.status_code == 202
    first, second = await published(daemon)
    assert (first["source"], first["type"], first["urgency"]) == ("urn:ci", "build.failed", "high")
    assert first["session_id"] == "ops"
    assert first["summary"] == "build 9 failed"
    assert first["payload"] == {"summary": "build 9 failed", "job": 9}
    assert first["dedupe_key"] == "ce:urn:ci:e-1"
    assert first["observed_at"].startswith("2026-11-24T10:00:00")
    assert (second["summary"], second["type"]) == ("deploy done", "deploy.done")
    repeat = await client.post(
        "/signals",
        content=json.dumps(structured),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert repeat.json()["status"] == "duplicate"


async def test_bad_input_says_what_is_wrong(gateway: tuple[Daemon, httpx.AsyncClient]) -> None:
    _, client = gateway
    bad_urgency = await client.post("/signals", json={"summary": "x", "urgency": "panic"})
    assert bad_urgency.status_code == 422
    assert "urgency" in bad_urgency.json()["error"]
    missing = await client.post(
        "/signals",
        content=json.dumps({"specversion": "1.0", "id": "1"}),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert missing.status_code == 422
    assert "source, type" in missing.json()["error"]
    too_big = await client.post("/signals", content=b"x" * 2_000_000)
    assert too_big.status_code == 413
    unauthorized = await client.post(
        "/signals", json={"summary": "x"}, headers={"authorization": "Bearer nope"}
    )
    assert unauthorized.status_code == 401


async def test_draining_gateway_refuses_with_503(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    daemon.draining = True
    response = await client.post("/signals", json={"summary": "late"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"  # another replica can take it now
    webhook = await client.post("/webhooks/alertmanager", json={})
    assert webhook.status_code == 503
    assert webhook.headers["retry-after"] == "1"
    daemon.draining = False


async def test_broker_down_is_503_and_the_key_is_released(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    await daemon.broker.close()
    down = await client.post("/signals", json={"summary": "x", "dedupe_key": "k2"})
    assert down.status_code == 503
    assert "broker unavailable" in down.json()["error"]
    assert await daemon.state.claimed("accepting:k2") is None  # released for a retry
    assert await daemon.state.marker("accepted:k2") is None
    await daemon.broker.start()
    retry = await client.post("/signals", json={"summary": "x", "dedupe_key": "k2"})
    assert retry.status_code == 202
    assert await daemon.state.marker("accepted:k2") == retry.json()["id"]


async def test_a_malformed_content_length_is_not_a_server_error(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    _, client = gateway
    body = json.dumps({"summary": "x"}).encode()
    for declared in (b"\xb2", b"9" * 5000):  # isdigit() is True of both; int() refuses both
        response = await client.post("/signals", content=body, headers={"content-length": declared})
        assert response.status_code < 500, (declared[:10], response.text)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"time": []}, "attribute 'time' must be a string, not an array"),
        ({"subject": 5}, "attribute 'subject' must be a string, not int"),
        ({"Bad-Name": "x"}, "must be lowercase letters and digits"),
        ({"traceid": 1.5}, "must be a string, integer or boolean, not float"),
        ({"data": {}, "data_base64": "eA=="}, "data or data_base64, not both"),
        ({"data_base64": False}, "data_base64 must be a string, not bool"),
        ({"loomsession": ""}, "session_id"),
    ],
)
async def test_cloudevent_attributes_follow_the_type_system(
    gateway: tuple[Daemon, httpx.AsyncClient], attributes: dict[str, object], message: str
) -> None:
    _, client = gateway
    event = {"specversion": "1.0", "id": "1", "source": "ci", "type": "build", **attributes}
    response = await client.post(
        "/signals",
        content=json.dumps(event),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 422
    assert message in response.json()["error"]


async def test_binary_data_stays_base64_in_the_payload(
    gateway: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = gateway
    event = {
        "specversion": "1.0",
        "id": "b64",
        "source": "ci",
        "type": "blob",
        "data_base64": "eA==",
    }
    response = await client.post(
        "/signals",
        content=json.dumps(event),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 202
    [signal] = await published(daemon)
    assert signal["payload"] == {"data_base64": "eA=="}
