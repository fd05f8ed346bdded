"""The HTTP surface every Loom process serves: health, readiness, metrics, sessions, signals.

``error`` and ``read_body`` live in ``loom.intake.http``, ``accept`` is the intake port's
(``loom.intake``); they are re-exported here for code that imported them from this module."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from loom import tracing
from loom.daemon.attention import describe_validation_error
from loom.daemon.http_metrics import HTTPMetrics
from loom.daemon.intake import accept
from loom.daemon.openapi import build_openapi
from loom.intake.cloudevents import (
    CloudEventError,
    is_cloudevent,
    parse_http,
    signal_from_cloudevent,
)
from loom.intake.http import error, inbound_body, read_body
from loom.intake.signing import authenticate
from loom.signals import SESSION_ID_PATTERN, RuntimeSignal
from loom.wire import PendingSignal

if TYPE_CHECKING:
    from loom.daemon.app import Daemon


Endpoint = Callable[[Request], Awaitable[Response]]


def build_app(daemon: Daemon, *, gateway: bool) -> Starlette:
    """The ASGI app of one process; ``gateway`` adds the inbound routes."""
    context = daemon.adapter_context
    token, secret = context.api_token, context.webhook_secret

    def refusal(request: Request, body: bytes | None = None) -> str | None:
        """Why the request is refused, or None. With LOOM_API_TOKEN set it needs that bearer
        token, or, for endpoints that pass the body, an X-Loom-Signature made with
        LOOM_WEBHOOK_SECRET (see loom.intake.signing)."""
        if token is None:
            return None
        return authenticate(request.headers, body, token=token, secret=secret)

    def authorized(request: Request) -> bool:
        return refusal(request) is None

    def protected(endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if not authorized(request):
                return error(401, "missing or wrong bearer token (LOOM_API_TOKEN)")
            return await endpoint(request)

        return guarded

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await daemon.readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def openapi(request: Request) -> Response:
        return JSONResponse(build_openapi(daemon, gateway=gateway))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def get_session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if not re.fullmatch(SESSION_ID_PATTERN, session_id):
            return error(400, f"invalid session id {session_id!r}")
        view = await session_view(daemon, session_id)
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
        from loom.daemon.feedback_http import feedback_routes  # it imports this module

        routes.extend(feedback_routes(daemon, protected))
        for adapter in daemon.adapters:
            routes.extend(adapter.routes(context))
    return Starlette(
        routes=routes,
        middleware=[Middleware(HTTPMetrics, routes=routes)],
        exception_handlers={HTTPException: http_error},
    )


async def http_error(request: Request, problem: Exception) -> Response:
    """Starlette's own answers (no such route, wrong method) in the same JSON shape as ours."""
    assert isinstance(problem, HTTPException)
    if problem.status_code == 404:
        return error(404, f"no route {request.method} {request.url.path[:200]!r}")
    return JSONResponse(
        {"error": problem.detail}, status_code=problem.status_code, headers=problem.headers
    )


async def session_view(daemon: Daemon, session_id: str) -> dict[str, Any] | None:
    """A session as JSON: working state, runs with the signals each handled, last reply;
    None for a session nothing is known of."""
    state = daemon.state
    snapshot = await state.sessions.load(session_id)
    runs = [record.to_dict() for record in snapshot.runs] if snapshot else []
    last_reply = next((r["output"] for r in reversed(runs) if r["status"] == "completed"), None)
    holder = await state.lease_holder(session_id)
    pending = await state.pending(session_id)
    in_flight = await state.in_flight(session_id)
    decisions = await state.decisions(session_id, 50)
    if snapshot is None and not (pending or in_flight or decisions or holder):
        return None
    return {
        "session_id": session_id,
        "busy": holder is not None,
        "pending_signals": [_pending(text) for text in pending],
        "in_flight_signals": [_pending(text) for text in in_flight],
        "active_risks": await state.risks(session_id),
        "decisions": [json.loads(d) for d in decisions],
        "runs": runs,
        "last_reply": last_reply,
    }


def _pending(text: str) -> dict[str, Any]:
    pending = PendingSignal.from_json(text)
    return {"action": pending.action, "signal": pending.signal.model_dump(mode="json")}


__all__ = ["Endpoint", "accept", "build_app", "error", "http_error", "read_body", "session_view"]
