"""The HTTP surface every Loom process serves: health, readiness, metrics, sessions, signals.

``error`` and ``read_body`` live in ``loom.intake.http``, ``accept`` is the intake port's
(``loom.intake``); they are re-exported here for code that imported them from this module."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, compile_path
from starlette.types import Receive, Scope, Send

from loom import tracing
from loom.adapters.registry import OffRoute, known_reply_prefixes, off_routes
from loom.daemon.approvals import StateApprovalDesk, approval_routes
from loom.daemon.attention import describe_validation_error
from loom.daemon.console import ConsoleAuth, console_routes
from loom.daemon.feedback_http import feedback_routes
from loom.daemon.http_metrics import HTTPMetrics, record
from loom.daemon.intake import accept
from loom.daemon.openapi import build_openapi
from loom.daemon.session_view import session_view
from loom.daemon.settings import ConsoleSettings
from loom.intake import admission
from loom.intake.adapter import Adapter
from loom.intake.cloudevents import (
    CloudEventError,
    is_cloudevent,
    parse_http,
    signal_from_cloudevent,
)
from loom.intake.context import AdapterContext
from loom.intake.http import Endpoint, error, inbound_body, read_body
from loom.policies.feedback import FeedbackPolicy
from loom.signals import SESSION_ID_PATTERN, RuntimeSignal
from loom.state.base import State


class Served(Protocol):
    """What the HTTP app reads of the process it serves (a ``Daemon``)."""

    @property
    def adapter_context(self) -> AdapterContext: ...

    def capability_status(self) -> dict[str, dict[str, Any]]: ...

    @property
    def adapters(self) -> Sequence[Adapter]: ...

    @property
    def state(self) -> State: ...

    @property
    def feedback(self) -> FeedbackPolicy: ...

    @property
    def approvals(self) -> StateApprovalDesk: ...

    async def readiness(self) -> dict[str, bool]: ...


def build_app(
    daemon: Served, *, gateway: bool, console: ConsoleSettings | None = None
) -> Starlette:
    """The ASGI app of one process; ``gateway`` adds the inbound routes, and the operator
    console when ``console`` has it on (never without the API token)."""
    context = daemon.adapter_context
    credentials = context.credentials

    def refusal(request: Request, body: bytes | None = None) -> str | None:
        """Why a request to ``POST /signals`` is refused, or None: the bearer token or an
        X-Loom-Signature, whichever are configured (``Credentials``); open with neither
        (development mode, loopback only)."""
        return credentials.refusal(request.headers, body)

    def signed_only(request: Request) -> bool:
        return credentials.signed_only(request.headers)

    def protected(endpoint: Endpoint) -> Endpoint:
        """The sessions API: the bearer token, once any inbound credential is configured. A
        signature covers a body, and ``GET /sessions/{id}`` has none, so with only
        LOOM_WEBHOOK_SECRET set these routes are closed rather than open."""

        async def guarded(request: Request) -> Response:
            refused = credentials.refusal(request.headers, None)
            if refused is not None:
                return error(401, refused)
            return await endpoint(request)

        return guarded

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await daemon.readiness()
        ready = all(checks.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if capabilities := daemon.capability_status():
            body["capabilities"] = capabilities  # MCP servers: connected, degraded, last error
        return JSONResponse(body, status_code=200 if ready else 503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(build_openapi(daemon.adapters, gateway=gateway))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def get_session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if not re.fullmatch(SESSION_ID_PATTERN, session_id):
            return error(400, f"invalid session id {session_id!r}")
        view = await session_view(daemon.state, session_id)
        if view is None:
            return error(404, f"no session {session_id!r}")
        return JSONResponse(view)

    async def post_signal(request: Request) -> Response:
        body = await inbound_body(context, request, lambda body: refusal(request, body))
        if isinstance(body, Response):
            return body
        try:
            if is_cloudevent(request.headers):
                signal = signal_from_cloudevent(parse_http(request.headers, body))
            else:
                signal = RuntimeSignal.model_validate_json(body)
        except ValidationError as problem:
            return error(422, describe_validation_error(problem))
        except CloudEventError as problem:
            return error(422, str(problem))
        # The known kinds of address matter only for a reply_to (worked out only then).
        known = known_reply_prefixes() if signal.reply_to else ()
        refused = admission.refusal(signal, daemon.adapters, known)
        if refused is not None:
            return error(422, refused)
        with tracing.continued(request.headers):  # the sender's trace, if it sent one
            return await context.accept(signal)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/sessions/{session_id:path}", protected(get_session), methods=["GET"]),
    ]
    if gateway:
        routes.append(Route("/signals", post_signal, methods=["POST"]))  # checks itself
        routes.extend(
            feedback_routes(daemon.feedback, daemon.state, context.max_body_bytes, protected)
        )
        routes.extend(
            approval_routes(daemon.approvals, context.max_body_bytes, refusal, signed_only)
        )
        for adapter in daemon.adapters:
            routes.extend(adapter.routes(context))
        routes.extend(_console(daemon, console, credentials.token))
    # A gateway's request to a route that is off is told how to turn it on.
    hints = [(compile_path(off.path)[0], off) for off in off_routes()] if gateway else []

    async def not_found(request: Request, problem: Exception) -> Response:
        assert isinstance(problem, HTTPException)
        if problem.status_code == 404:
            for pattern, off in hints:
                if found := pattern.fullmatch(request.scope["path"]):
                    return error(404, off.explain(found.groupdict()))
        return await http_error(request, problem)

    app = _App(
        post_signal if gateway else None,
        routes=routes,
        middleware=[Middleware(HTTPMetrics, routes=routes)],
        exception_handlers={HTTPException: not_found},
    )
    app.state.off_routes = [off for _, off in hints]
    return app


class _App(Starlette):
    """The Starlette app, with ``POST /signals`` (the accept path, the one route under
    load) served before its middleware and router: the same endpoint, answers and metrics,
    without the layers that only pass the request on (about a tenth of the gateway's CPU).
    What they would add is done here: the request counted and timed, and a 500 "Internal
    Server Error" for an endpoint that raises (re-raised, so the server logs it)."""

    def __init__(self, signals: Endpoint | None, **options: Any) -> None:
        super().__init__(**options)
        self._signals = signals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._signals is not None
            and scope["type"] == "http"
            and scope["path"] == "/signals"
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            await self._accept(self._signals, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _accept(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        scope["app"] = self
        try:
            response = await endpoint(Request(scope, receive))
        except Exception:
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        else:
            status = response.status_code
            await response(scope, receive, send)
        finally:
            record("/signals", status, time.perf_counter() - started)


def _console(
    daemon: Served, settings: ConsoleSettings | None, token: str | None
) -> list[BaseRoute]:
    """The console's routes when it is on; off, ``/console`` says how to turn it on."""
    if settings is None or not settings.on(token is not None):
        return [Route("/console{rest:path}", _console_off, methods=["GET", "POST"])]
    if token is None:  # Settings refuse this too: the console never serves without a token
        raise ValueError("the console needs LOOM_API_TOKEN (or LOOM_CONSOLE__ENABLED=false)")
    auth = ConsoleAuth(token, login_ttl=settings.login_ttl)
    return console_routes(daemon, auth, page_size=settings.page_size, poll=settings.poll)


async def _console_off(request: Request) -> Response:
    return error(
        404,
        "the console is off: it needs LOOM_API_TOKEN, and LOOM_CONSOLE__ENABLED not false",
    )


def describe_routes(app: Starlette, adapters: Sequence[Adapter]) -> str:
    """One line for the startup log: the routes served, the adapters, the routes off."""
    served = [route for route in app.routes if isinstance(route, Route)]
    routes = [
        f"{','.join(sorted(set(route.methods or ['ANY']) - {'HEAD'}))} {route.path}"
        for route in served
    ]
    paths = {route.path for route in served}
    offs: list[OffRoute] = getattr(app.state, "off_routes", [])
    off = [o.path for o in offs if "{" not in o.path and o.path not in paths]
    names = ", ".join(adapter.name for adapter in adapters) or "none"
    return f"routes {', '.join(routes)}; adapters {names}" + (
        f"; off {', '.join(off)}" if off else ""
    )


def credentials_warning(*, api_token: bool, webhook_secret: bool) -> str | None:
    """What a process logs at start about its inbound credentials, or None when the API
    token is set."""
    if api_token:
        return None
    if webhook_secret:
        return (
            "no LOOM_API_TOKEN: POST /signals needs an X-Loom-Signature (LOOM_WEBHOOK_SECRET) "
            "and the sessions API is closed"
        )
    return (
        "no LOOM_API_TOKEN: inbound routes accept unauthenticated requests "
        "(development mode, loopback only)"
    )


async def http_error(request: Request, problem: Exception) -> Response:
    """Starlette's own answers (no such route, wrong method) in the same JSON shape as ours."""
    assert isinstance(problem, HTTPException)
    if problem.status_code == 404:
        return error(404, f"no route {request.method} {request.url.path[:200]!r}")
    return JSONResponse(
        {"error": problem.detail}, status_code=problem.status_code, headers=problem.headers
    )


__all__ = [
    "Endpoint",
    "Served",
    "accept",
    "build_app",
    "credentials_warning",
    "describe_routes",
    "error",
    "http_error",
    "read_body",
    "session_view",
]
