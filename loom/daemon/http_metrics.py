"""HTTP metrics: every request counted and timed, labelled by its route template.

The label is the template (``/sessions/{session_id:path}``), never the raw path, so session
ids and scanners' random paths cannot blow up the number of series; a path no route serves
is ``unmatched``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loom import metrics

UNMATCHED = "unmatched"

# The metrics' children by label values, found once instead of by ``labels()`` per request.
_requests: dict[tuple[str, int], Any] = {}
_durations: dict[str, Any] = {}


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route that serves ``scope`` (or would, but for the method)."""
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
        if match is Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", UNMATCHED))
    return partial or UNMATCHED


class HTTPMetrics:
    """ASGI middleware recording ``loom_http_requests_total`` and the latency histogram."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self._templates = {id(route): str(getattr(route, "path", UNMATCHED)) for route in routes}

    def template(self, scope: Scope) -> str:
        """The route template of a request the router has seen: the router leaves the route
        it chose in ``scope["route"]`` (the first full match, else the first partial one,
        as ``route_template`` finds), so the routes are not matched a second time."""
        chosen = scope.get("route")
        if chosen is None:
            return UNMATCHED
        known = self._templates.get(id(chosen))
        # A route inside a mount overwrites the mount's entry: match again for those.
        return known if known is not None else route_template(self.routes, scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers when the app raises before responding
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            record(self.template(scope), status, time.perf_counter() - started)


def record(route: str, status: int, seconds: float) -> None:
    """Count a request to ``route`` answered ``status`` and time it (``seconds``)."""
    counted = _requests.get((route, status))
    if counted is None:  # routes and status codes are few: every pair is kept
        counted = metrics.HTTP_REQUESTS.labels(route, str(status))
        _requests[route, status] = counted
    counted.inc()
    timed = _durations.get(route)
    if timed is None:
        timed = _durations[route] = metrics.HTTP_DURATION.labels(route)
    timed.observe(seconds)
