"""What the gateway's accept path runs on: uvloop's event loop, and one route match."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvloop

from loom.daemon import http_metrics
from loom.daemon.cli import serve_forever


def test_a_serving_process_runs_on_uvloop() -> None:
    async def loop_kind() -> int:
        return 1 if isinstance(asyncio.get_running_loop(), uvloop.Loop) else 0

    assert serve_forever(loop_kind()) == 1


async def test_http_metrics_take_the_route_the_router_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from loom import metrics

    def no_second_match(*_: object) -> str:
        raise AssertionError("the routes were matched a second time")

    monkeypatch.setattr(http_metrics, "route_template", no_second_match)

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    routes = [Route("/a/{x}", hello, methods=["GET"])]
    app = Starlette(routes=routes, middleware=[Middleware(http_metrics.HTTPMetrics, routes=routes)])
    counter = metrics.HTTP_REQUESTS
    before = {
        labels: counter.labels(*labels)._value.get()
        for labels in (("/a/{x}", "200"), ("/a/{x}", "405"), ("unmatched", "404"))
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/a/1")).status_code == 200
        assert (await client.post("/a/1")).status_code == 405
        assert (await client.get("/b")).status_code == 404
    for labels, value in before.items():
        assert counter.labels(*labels)._value.get() == value + 1, labels
