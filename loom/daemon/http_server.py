"""The HTTP server of a Loom process: uvicorn, with the header timeout it lacks.

uvicorn closes idle keep-alive connections, but not a client that sends its request
headers slowly: a byte every few seconds holds a connection open for good. The protocol
here closes a connection whose request headers are not complete ``HEADER_TIMEOUT``
seconds after it opened (or after the previous response), quietly: no request started, so
there is no one to answer. Bodies are timed by the body reader
(``loom.intake.http.read_body``, a 408).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("loom.http")

HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's headers."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose headers come too slowly."""

    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._cycle_seen: object = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._cycle_seen:  # a request's headers are complete
            self._cycle_seen = self.cycle
            self._disarm()

    def on_response_complete(self) -> None:
        # Armed first: a pipelined request handled within disarms it again.
        self._arm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            logger.debug("closing a connection: no complete request headers within %gs",
                         self.header_timeout)  # fmt: skip
            self.transport.close()


__all__ = ["HEADER_TIMEOUT", "GuardedH11Protocol"]
