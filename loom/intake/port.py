"""The intake port: how a signal gets in, for the gateway and every adapter.

``Intake.publish`` publishes a signal, confirmed by the broker (scheduled adapters use it).
``Intake.accept`` publishes a signal and answers for it::

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

import json
import logging
from typing import TYPE_CHECKING, Protocol

from starlette.responses import JSONResponse, Response

from loom import tracing
from loom.broker.base import BrokerUnavailable
from loom.intake.http import error
from loom.state.base import StateUnavailable
from loom.wire import publish_signal

if TYPE_CHECKING:
    from loom.broker.base import Broker
    from loom.signals import RuntimeSignal
    from loom.state.base import State

logger = logging.getLogger("loom.http")

CLAIM_MARGIN = 5.0
"""Seconds an accept claim outlives the longest publish (``publish_timeout``)."""


class Host(Protocol):
    """What the intake reads from the process it runs in, at each use (the Daemon is one):
    a test or a reconnect may swap the state or the broker after the start."""

    @property
    def state(self) -> State: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def draining(self) -> bool: ...


class Intake:
    """The narrow port signals come in through: ``accept`` (HTTP routes) and ``publish``."""

    def __init__(self, host: Host, *, publish_timeout: float, dedupe_ttl: float) -> None:
        self._host = host
        self.publish_timeout = publish_timeout
        self.dedupe_ttl = dedupe_ttl

    async def publish(self, signal: RuntimeSignal) -> None:
        """Publish ``signal`` and wait for the broker's confirmation; raises
        ``BrokerUnavailable`` when it did not confirm."""
        await publish_signal(self._host.broker, signal)

    async def accept(self, signal: RuntimeSignal) -> Response:
        """Publish a signal and answer for it (see the module's docstring): 202 once the
        broker confirmed it, 200 for a dedupe key already accepted, 503 when it was not
        accepted."""
        if not tracing.recording():  # the span would be the no-op one
            return await self._accept(signal)
        attributes = tracing.signal_attributes(signal)
        with tracing.span("loom.gateway.accept", kind="server", attributes=attributes) as span:
            response = await self._accept(signal)
            span.set_attribute("http.response.status_code", response.status_code)
        return response

    async def _accept(self, signal: RuntimeSignal) -> Response:
        if not signal.dedupe_key:
            return await self._publish(signal, None)
        state = self._host.state
        marker, claim = f"accepted:{signal.dedupe_key}", f"accepting:{signal.dedupe_key}"
        try:
            taken = await state.claim_unless_marked(
                marker, claim, signal.id, self.publish_timeout + CLAIM_MARGIN
            )
        except StateUnavailable as problem:
            logger.error("signal %s not accepted: %s", signal.id, problem)
            return error(
                503,
                f"state store unavailable, signal not accepted: {problem}",
                retry_after=self.publish_timeout,
            )
        if taken is not None:
            what, holder = taken
            if what == "marked":
                return JSONResponse({"id": holder, "status": "duplicate"}, status_code=200)
            return error(
                503,
                f"a signal with dedupe key {signal.dedupe_key[:200]!r} is being accepted right "
                "now and may still fail: not accepted; send it again",
                retry_after=self.publish_timeout,
            )
        response = await self._publish(signal, claim)
        if response.status_code != 202:
            return response
        try:
            await state.mark_and_release(marker, signal.id, self.dedupe_ttl, claim, signal.id)
        except StateUnavailable as problem:
            # The broker confirmed it, so it is accepted. Until the claim lapses a retry gets
            # a 503; after that a retry is published again, and the attention role drops it.
            logger.warning("signal %s accepted but not marked as accepted: %s", signal.id, problem)
        return response

    async def _publish(self, signal: RuntimeSignal, claim: str | None) -> Response:
        """Publish; 202 once confirmed. On failure the claim is forgotten, for the retry."""
        try:
            await self.publish(signal)
        except BaseException as problem:
            if claim is not None:
                try:
                    await self._host.state.forget(claim)
                except StateUnavailable as lost:  # the claim's short TTL releases it instead
                    logger.warning("claim %r of signal %s not released: %s", claim, signal.id, lost)
            if not isinstance(problem, BrokerUnavailable):
                raise
            logger.error("signal %s not accepted: %s", signal.id, problem)
            return error(
                503,
                f"broker unavailable, signal not accepted: {problem}",
                retry_after=self.publish_timeout,
            )
        return accepted(signal.id)


def accepted(signal_id: str) -> Response:
    """``202 {"id": ..., "status": "accepted"}``, the bytes and headers ``JSONResponse``
    gives, with only the id encoded per request (the answer to every accepted signal)."""
    body = b'{"id":%s,"status":"accepted"}' % json.dumps(signal_id, ensure_ascii=False).encode()
    return Response(body, status_code=202, media_type="application/json")


__all__ = ["CLAIM_MARGIN", "Host", "Intake", "accepted"]
