"""Intake: how an inbound request becomes an accepted signal, for every inbound route.

``accept`` publishes a signal and answers for it::

    202 {"id", "status": "accepted"}    the broker confirmed it
    200 {"id", "status": "duplicate"}   its dedupe key was accepted before (``id``: that one)
    503 {"error"} + Retry-After         the same dedupe key is being accepted right now, or
                                        the broker or the state store is down: nothing was
                                        accepted, send it again

A dedupe key is taken in two phases, so that "duplicate" is only ever said of a signal the
broker confirmed. While a request publishes, it holds a short claim (``accepting:{key}``,
``publish_timeout`` + 5 s: the longest a publish may wait for a broker that reconnects). A
retry that meets the claim gets a 503, not a 200: the first request may still fail, and a
sender told "duplicate" would never send the signal again (Slack gives up waiting after 3 s
and retries; a 200 to its retry would lose the event when the first publish then fails).
Once the broker confirmed, the marker ``accepted:{key}`` is stored for ``dedupe_ttl`` and the
claim released, in one step; a failed publish forgets the claim. A claim left behind (the
state store down at that moment, a crash) lapses with its short TTL, so it can hold a
retry back for seconds but never make it a duplicate. The attention role dedupes again on
its own key (``signal:{key}``), which absorbs the copies at-least-once delivery makes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from loom import tracing
from loom.broker.base import BrokerUnavailable
from loom.state.base import StateUnavailable
from loom.wire import publish_signal

if TYPE_CHECKING:
    from loom.daemon.app import Daemon
    from loom.signals import RuntimeSignal

logger = logging.getLogger("loom.http")

CLAIM_MARGIN = 5.0
"""Seconds an accept claim outlives the longest publish (``publish_timeout``)."""


def error(status: int, message: str, *, retry_after: float | None = None) -> JSONResponse:
    """``{"error": message}`` with ``status``; ``retry_after`` seconds as a Retry-After."""
    headers = None if retry_after is None else {"retry-after": str(max(1, math.ceil(retry_after)))}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def inbound_body(
    daemon: Daemon, request: Request, refusal: Callable[[bytes], str | None]
) -> bytes | Response:
    """The body of an inbound request, or the answer that ends it: 503 while draining, 413
    past the body limit, 401 with the reason ``refusal`` gives (it sees the body, since a
    signature covers it)."""
    if daemon.draining:
        return error(503, "shutting down: not accepted; send it to another replica", retry_after=1)
    body = await read_body(request, daemon.settings.http.max_body_bytes)
    if isinstance(body, Response):
        return body
    refused = refusal(body)
    return body if refused is None else error(401, refused)


async def read_body(request: Request, limit: int) -> bytes | Response:
    """The request body, or a 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    # ASCII digits only, and few: int() of "²" or of 5,000 digits raises.
    if re.fullmatch(r"[0-9]+", declared) and (len(declared) > 18 or int(declared) > limit):
        return error(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return error(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def accept(daemon: Daemon, signal: RuntimeSignal) -> Response:
    """Publish a signal and answer for it (see the module's docstring): 202 once the broker
    confirmed it, 200 for a dedupe key already accepted, 503 when it was not accepted."""
    attributes = {"loom.signal_id": signal.id, "loom.source": signal.source,
                  "loom.type": signal.type, "loom.session_id": signal.session_id}  # fmt: skip
    with tracing.span("loom.gateway.accept", kind="server", attributes=attributes) as span:
        response = await _accept(daemon, signal)
        span.set_attribute("http.response.status_code", response.status_code)
    return response


async def _accept(daemon: Daemon, signal: RuntimeSignal) -> Response:
    if not signal.dedupe_key:
        return await _publish(daemon, signal, None)
    settings, state = daemon.settings, daemon.state
    marker, claim = f"accepted:{signal.dedupe_key}", f"accepting:{signal.dedupe_key}"
    try:
        taken = await state.claim_unless_marked(
            marker, claim, signal.id, settings.publish_timeout + CLAIM_MARGIN
        )
    except StateUnavailable as problem:
        logger.error("signal %s not accepted: %s", signal.id, problem)
        return error(
            503,
            f"state store unavailable, signal not accepted: {problem}",
            retry_after=settings.publish_timeout,
        )
    if taken is not None:
        what, holder = taken
        if what == "marked":
            return JSONResponse({"id": holder, "status": "duplicate"}, status_code=200)
        return error(
            503,
            f"a signal with dedupe key {signal.dedupe_key[:200]!r} is being accepted right "
            "now and may still fail: not accepted; send it again",
            retry_after=settings.publish_timeout,
        )
    response = await _publish(daemon, signal, claim)
    if response.status_code != 202:
        return response
    try:
        await state.mark_and_release(marker, signal.id, settings.dedupe_ttl, claim, signal.id)
    except StateUnavailable as problem:
        # The broker confirmed it, so it is accepted. Until the claim lapses a retry gets a
        # 503; after that a retry is published again, and the attention role drops it.
        logger.warning("signal %s accepted but not marked as accepted: %s", signal.id, problem)
    return response


async def _publish(daemon: Daemon, signal: RuntimeSignal, claim: str | None) -> Response:
    """Publish; 202 once confirmed. On failure the claim is forgotten, for the retry."""
    try:
        await publish_signal(daemon.broker, signal)
    except BaseException as problem:
        if claim is not None:
            try:
                await daemon.state.forget(claim)
            except StateUnavailable as lost:  # the claim's short TTL releases it instead
                logger.warning("claim %r of signal %s not released: %s", claim, signal.id, lost)
        if not isinstance(problem, BrokerUnavailable):
            raise
        logger.error("signal %s not accepted: %s", signal.id, problem)
        return error(
            503,
            f"broker unavailable, signal not accepted: {problem}",
            retry_after=daemon.settings.publish_timeout,
        )
    return JSONResponse({"id": signal.id, "status": "accepted"}, status_code=202)


__all__ = ["CLAIM_MARGIN", "accept", "error", "read_body"]
