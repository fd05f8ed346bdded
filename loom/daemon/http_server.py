"""The HTTP server of a Loom process: uvicorn, with the header timeout it lacks.

uvicorn closes idle keep-alive connections, but not a client that sends its request
headers slowly: a byte every few seconds holds a connection open for good. The protocols
here close a connection whose request headers are not complete ``HEADER_TIMEOUT`` seconds
after it opened (or after the previous response), quietly: no request started, so there is
no one to answer. Bodies are timed by the body reader (``loom.intake.http.read_body``, a
408).

A Loom process serves with httptools (C, which ``uvicorn[standard]`` brings on every
platform); on the gateway's accept path the pure-Python h11 cost about a third of the
process's CPU. The h11 protocol is kept, guarded alike, for servers that choose it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from loom.core.coalescing import CoalescingTransport

logger = logging.getLogger("loom.http")

HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's headers."""


class _HeaderTimer:
    """The header timeout of one connection: armed while the next request's headers are
    awaited, disarmed once they are complete."""

    header_timeout = HEADER_TIMEOUT
    loop: asyncio.AbstractEventLoop
    transport: Any
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            logger.debug("closing a connection: no complete request headers within %gs",
                         self.header_timeout)  # fmt: skip
            self.transport.close()


class GuardedH11Protocol(_HeaderTimer, H11Protocol):
    """uvicorn's h11 protocol, closing connections whose headers come too slowly."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._cycle_seen: object = None
        self._arm()

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


class GuardedHttpToolsProtocol(_HeaderTimer, HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers come too slowly,
    and writing each response in one piece (``CoalescingTransport``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(cast(asyncio.Transport, coalescing))
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A request parsed while this one was answered (pipelined) has its headers: the
        # timer waits only when no request is begun, or one is but its headers are not in.
        if self.cycle.response_complete and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


__all__ = [
    "HEADER_TIMEOUT",
    "CoalescingTransport",
    "GuardedH11Protocol",
    "GuardedHttpToolsProtocol",
]
