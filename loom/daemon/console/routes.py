"""The console's routes under ``/console``: pages rendered on the server (Jinja2, every value
escaped), actions as POST forms, live updates by server-sent events."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from loom.core.approvals import ApprovalError, Decision
from loom.daemon.console import views
from loom.daemon.console.auth import OPERATOR_PATTERN, ConsoleAuth, origin_refusal
from loom.signals import SESSION_ID_PATTERN
from loom.state.base import StateUnavailable
from loom.state.session_index import SessionStatus

logger = logging.getLogger("loom.console")

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024
STREAM_SECONDS = 300.0
"""A live page's event stream ends after this long; the browser reconnects on its own."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Page = Callable[[Request, str], Awaitable[Response]]


def console_routes(
    host: views.ConsoleHost, auth: ConsoleAuth, *, page_size: int, poll: float
) -> list[BaseRoute]:
    """``/console`` and everything under it."""
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        auto_reload=False,
    )
    state = host.state

    def render(request: Request, name: str, code: int = 200, **values: Any) -> HTMLResponse:
        body = templates.get_template(name).render(
            csrf=auth.csrf_token(request), nav=name.removesuffix(".html"), **values
        )
        return HTMLResponse(body, status_code=code, headers=SECURITY_HEADERS)

    def problem(request: Request, status: int, message: str, who: str | None) -> HTMLResponse:
        return render(request, "error.html", status, status_code=status, message=message,
                      who=who)  # fmt: skip

    def page(endpoint: Page) -> Callable[[Request], Awaitable[Response]]:
        """A page for a logged-in operator; anyone else is sent to the login page."""

        async def guarded(request: Request) -> Response:
            who = auth.operator(request)
            if who is None:
                return RedirectResponse("/console/login", 303, headers=SECURITY_HEADERS)
            try:
                return await endpoint(request, who)
            except StateUnavailable as exc:
                return problem(request, 503, f"the state is unavailable: {exc}", who)

        return guarded

    def action(
        endpoint: Callable[[Request, str, dict[str, str]], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST: a logged-in operator, this site's Origin and the form's CSRF token."""

        async def guarded(request: Request) -> Response:
            who = auth.operator(request)
            if who is None:
                return problem(request, 401, "log in first: the console needs the API token",
                               None)  # fmt: skip
            form = await read_form(request)
            if form is None:
                return problem(request, 413, "form too large", who)
            refused = auth.action_refusal(request, form.get("csrf"))
            if refused is not None:
                logger.warning("console: %s refused for %s: %s", request.url.path, who, refused)
                return problem(request, 403, refused, who)
            try:
                return await endpoint(request, who, form)
            except StateUnavailable as exc:
                return problem(request, 503, f"the state is unavailable: {exc}", who)

        return guarded

    async def login_form(request: Request) -> Response:
        if auth.operator(request) is not None:
            return RedirectResponse("/console/sessions", 303)
        return render(request, "login.html", error=None, who=None)

    async def login(request: Request) -> Response:
        form = await read_form(request)
        refused = "form too large" if form is None else origin_refusal(request)
        if form is None or refused is not None:
            return render(request, "login.html", 403, error=refused, who=None)
        operator = form.get("operator", "").strip()
        if not re.fullmatch(OPERATOR_PATTERN, operator):
            return render(request, "login.html", 422, who=None,
                          error="your name: 1 to 64 letters, digits, spaces or _.@-")  # fmt: skip
        if not auth.token_matches(form.get("token", "")):
            logger.warning("console: a login as %r with a wrong token", operator)
            return render(request, "login.html", 401, error="wrong token", who=None)
        logger.info("console: %s logged in", operator)
        response = RedirectResponse("/console/sessions", 303, headers=SECURITY_HEADERS)
        auth.set_login(response, request, operator)
        return response

    async def logout(request: Request, who: str, form: dict[str, str]) -> Response:
        logger.info("console: %s logged out", who)
        response = RedirectResponse("/console/login", 303, headers=SECURITY_HEADERS)
        auth.clear_login(response)
        return response

    async def home(request: Request, who: str) -> Response:
        return RedirectResponse("/console/sessions", 303)

    async def sessions(request: Request, who: str) -> Response:
        wanted = request.query_params.get("status", "")
        try:
            status = SessionStatus(wanted) if wanted else None
        except ValueError:
            return problem(request, 400, f"unknown status {wanted[:50]!r}", who)
        data = await views.sessions_page(state, status, page_number(request), page_size)
        partial = request.query_params.get("partial") == "1"
        return render(request, "_sessions.html" if partial else "sessions.html", who=who, **data)

    async def session(request: Request, who: str) -> Response:
        session_id = request.query_params.get("id", "")
        if not re.fullmatch(SESSION_ID_PATTERN, session_id):
            return problem(request, 404, f"no session {session_id[:200]!r}", who)
        data = await views.session_page(state, session_id)
        if data is None:
            return problem(request, 404, f"no session {session_id[:200]!r}", who)
        return render(request, "session.html", who=who, s=data)

    async def run(request: Request, who: str) -> Response:
        session_id = request.query_params.get("session", "")
        run_id = request.query_params.get("run", "")
        data = None
        if re.fullmatch(SESSION_ID_PATTERN, session_id) and run_id:
            data = await views.run_page(state, session_id, run_id)
        if data is None:
            return problem(request, 404, f"no run {run_id[:100]!r} in session "
                           f"{session_id[:200]!r}", who)  # fmt: skip
        return render(request, "run.html", who=who, session_id=session_id, **data)

    async def approvals(request: Request, who: str) -> Response:
        rows = await views.approvals_page(state, page_size)
        partial = request.query_params.get("partial") == "1"
        return render(request, "_approvals.html" if partial else "approvals.html", who=who,
                      approvals=rows, done=request.query_params.get("done"))  # fmt: skip

    async def decide(request: Request, who: str, form: dict[str, str]) -> Response:
        session_id, approval_id = form.get("session", ""), form.get("approval", "")
        decision = form.get("decision", "")
        if decision not in ("approve", "deny"):
            return problem(request, 422, "decision: approve or deny", who)
        if not re.fullmatch(SESSION_ID_PATTERN, session_id):
            return problem(request, 404, f"no approval {approval_id[:100]!r}", who)
        try:
            decided = await host.approvals.decide(
                session_id, approval_id, Decision(decision),
                message=form.get("message") or None, digest=form.get("digest") or None,
                by=f"console:{who}",
            )  # fmt: skip
        except ApprovalError as exc:
            return problem(request, exc.status, str(exc), who)
        logger.info("console: %s %sd approval %s (%s) in session %s", who, decision,
                    approval_id, decided.approval.tool, session_id)  # fmt: skip
        return RedirectResponse(f"/console/approvals?done={decision}", 303)

    async def dead_letters(request: Request, who: str) -> Response:
        broker = host.adapter_context.broker
        letters = [views.letter_view(broker, x) for x in await broker.dead_letters(page_size)]
        return render(request, "dead_letters.html", who=who, letters=letters,
                      replayed=request.query_params.get("replayed"))  # fmt: skip

    async def replay(request: Request, who: str, form: dict[str, str]) -> Response:
        message_id = form.get("message_id", "")
        broker = host.adapter_context.broker
        count = await broker.replay_dead_letters(message_id=message_id) if message_id else 0
        if count == 0:
            return problem(request, 404, f"no dead letter {message_id[:200]!r} to replay", who)
        logger.info("console: %s replayed dead letter %s", who, message_id)
        return RedirectResponse(f"/console/dead-letters?replayed={count}", 303)

    async def system(request: Request, who: str) -> Response:
        return render(request, "system.html", who=who, **await views.system_page(host))

    async def events(request: Request, who: str) -> Response:
        context = host.adapter_context

        async def changes() -> AsyncIterator[dict[str, str]]:
            loop = asyncio.get_running_loop()
            ends = loop.time() + STREAM_SECONDS
            seen: str | None = None
            while loop.time() < ends and not context.draining:
                now: str | None
                try:
                    now = await views.fingerprint(state)
                except StateUnavailable:
                    now = seen  # said again once the state answers
                if seen is not None and now != seen:
                    yield {"event": "change", "data": "1"}
                seen = now
                await asyncio.sleep(poll)

        return EventSourceResponse(changes(), ping=15, headers={"Cache-Control": "no-store"})

    async def not_found(request: Request) -> Response:
        return problem(request, 404, f"no page {request.url.path[:200]!r}", auth.operator(request))

    routes: list[BaseRoute] = [
        Route("/", page(home), methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", action(logout), methods=["POST"]),
        Route("/sessions", page(sessions), methods=["GET"]),
        Route("/session", page(session), methods=["GET"]),
        Route("/run", page(run), methods=["GET"]),
        Route("/approvals", page(approvals), methods=["GET"]),
        Route("/approvals/decide", action(decide), methods=["POST"]),
        Route("/dead-letters", page(dead_letters), methods=["GET"]),
        Route("/dead-letters/replay", action(replay), methods=["POST"]),
        Route("/system", page(system), methods=["GET"]),
        Route("/events", page(events), methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="console-static"),
        Route("/{rest:path}", not_found, methods=["GET", "POST"]),
    ]
    return [Mount("/console", routes=routes), Route("/console", page(home), methods=["GET"])]


def page_number(request: Request) -> int:
    """``?page=N`` (1 when missing or not a positive number; past the last: empty)."""
    text = request.query_params.get("page", "1")
    return int(text) if text.isdigit() and 0 < int(text) < 10**9 else 1


async def read_form(request: Request) -> dict[str, str] | None:
    """A URL-encoded form of at most ``MAX_FORM_BYTES`` (None if larger)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


__all__ = ["console_routes"]
