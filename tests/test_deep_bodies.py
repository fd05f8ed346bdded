"""A body nested thousands deep is refused with a 4xx by every inbound route that parses
JSON: it used to exhaust Python's recursion inside the webhook and answer 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from loom import Agent, Model
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.intake.http import parse_json

DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 5_000 + "1" + "}" * 5_000


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(webhooks={"mappings": {"deploys": {"summary": "title"}}})  # type: ignore[arg-type]
    daemon = Daemon(Agent(Model.test()), settings=settings)
    await daemon.start(["gateway"])
    app = build_app(daemon, gateway=True)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
        yield client
    await daemon.stop()


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/webhooks/deploys", {}),
        ("/webhooks/alertmanager", {}),
        ("/signals", {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}),
    ],
    ids=["mapping", "alertmanager", "cloudevent-binary"],
)
async def test_a_deeply_nested_body_is_a_client_error(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], body: str
) -> None:
    answer = await client.post(
        path, content=body, headers={"content-type": "application/json", **headers}
    )
    assert answer.status_code == 422, answer.text
    assert "recursion limit exceeded" in answer.json()["error"]


def test_ordinary_json_parses_as_before() -> None:
    body = b'{"a": [1, 2.5, null, true, "x\\u00e9"], "n": 123456789012345678901234567890}'
    assert parse_json(body) == {
        "a": [1, 2.5, None, True, "xé"],
        "n": 123456789012345678901234567890,
    }
    with pytest.raises(ValueError, match="EOF while parsing"):
        parse_json(b'{"a": ')
