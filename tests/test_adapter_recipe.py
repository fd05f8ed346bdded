"""The recipe of docs/architecture.md, followed from outside ``loom/``: a toy adapter
with its own settings section, registered in the adapter table, switched on from the
environment, serving a route and publishing through the intake port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from loom import Agent, Model, RuntimeSignal
from loom.adapters import registry
from loom.adapters.registry import AdapterEntry, AdapterSettings, register, unregister
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.intake import Adapter, AdapterContext, error, inbound_body
from loom.intake.openapi import answer, errors
from loom.wire import decision_view
from tests.test_daemon_memory import drain

# -- the adapter, as a contributor would write it (loom/adapters/toy.py + toy_settings.py) --


class ToySettings(BaseModel):
    """The ``toy`` section: ``LOOM_TOY__ENABLED=true`` switches the adapter on."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    session_id: str = "toys"


class Toy(Adapter):
    """``POST /toy`` with ``{"id": ..., "text": ...}``: one signal per id."""

    name = "toy"

    def __init__(self, settings: ToySettings) -> None:
        self.settings = settings
        self.contexts: list[object] = []

    def routes(self, context: AdapterContext) -> list[BaseRoute]:
        self.contexts.append(context)

        async def receive(request: Request) -> Response:
            body = await inbound_body(context, request, lambda body: None)
            if isinstance(body, Response):
                return body  # draining, too large, refused
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                return error(422, "want {'id': ..., 'text': ...}")
            signal = RuntimeSignal.create(
                data["text"],
                source="toy",
                type="toy.message",
                urgency="normal",
                session_id=self.settings.session_id,
                dedupe_key=f"toy:{data.get('id')}",
            )
            return await context.accept(signal)

        return [Route("/toy", receive, methods=["POST"])]

    def openapi(self) -> dict[str, Any]:
        return {
            "/toy": {
                "post": {
                    "summary": "A toy message",
                    "responses": {"202": answer("Accepted."), **errors(413, 422, 503)},
                }
            }
        }


def toy_adapters(section: ToySettings, settings: AdapterSettings) -> list[Adapter]:
    return [Toy(section)] if section.enabled else []


class ToyLoomSettings(Settings):
    """Loom's settings plus the toy section (in loom/, the section joins AdapterSettings)."""

    toy: ToySettings = Field(default_factory=ToySettings)


# -- the test ---------------------------------------------------------------------------


@pytest.fixture
def toy_registered() -> Iterator[None]:
    register(AdapterEntry("toy", toy_adapters))
    yield
    unregister("toy")


def make_settings() -> ToyLoomSettings:
    return ToyLoomSettings(worker={"lease_ttl": 2.0, "sweep_interval": 0.05})  # type: ignore[arg-type]


async def test_a_registered_adapter_serves_a_route_and_publishes_through_the_intake(
    toy_registered: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_TOY__ENABLED", "true")
    daemon = Daemon(Agent(Model.test(), "Answer."), settings=make_settings())
    [toy] = [adapter for adapter in daemon.adapters if isinstance(adapter, Toy)]
    await daemon.start()
    app = build_app(daemon, gateway=True)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
            first = await client.post("/toy", json={"id": 1, "text": "the build is red"})
            again = await client.post("/toy", json={"id": 1, "text": "the build is red"})
            bad = await client.post("/toy", json=[1])
            document = (await client.get("/openapi.json")).json()
        assert first.status_code == 202
        assert first.json()["status"] == "accepted"
        assert again.status_code == 200
        assert again.json() == {"id": first.json()["id"], "status": "duplicate"}
        assert bad.status_code == 422
        assert "/toy" in document["paths"]
        # The adapter got the narrow context, not the Daemon.
        assert toy.contexts == [daemon.adapter_context]
        assert not isinstance(toy.contexts[0], Daemon)
        await drain(daemon)
        decisions = [decision_view(d) for d in await daemon.state.decisions("toys")]
        assert [d["signal_id"] for d in decisions] == [first.json()["id"]]
    finally:
        await daemon.stop()


def test_the_section_switches_the_adapter_on_and_off(toy_registered: None) -> None:
    assert not [a for a in Daemon(settings=make_settings()).adapters if isinstance(a, Toy)]
    on = ToyLoomSettings(toy={"enabled": True})  # type: ignore[arg-type]
    assert [a.name for a in registry.adapters_from_settings(on) if isinstance(a, Toy)] == ["toy"]
    # Loom's own Settings has no toy section: the entry builds nothing.
    assert not [a for a in registry.adapters_from_settings(Settings()) if isinstance(a, Toy)]


def test_unregistered_the_adapter_is_gone() -> None:
    on = ToyLoomSettings(toy={"enabled": True})  # type: ignore[arg-type]
    assert "toy" not in [entry.section for entry in registry.TABLE]
    assert not [a for a in registry.adapters_from_settings(on) if isinstance(a, Toy)]
