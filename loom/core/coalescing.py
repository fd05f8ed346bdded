"""A transport whose writes made in one step of the event loop go out in one write.

Used on both sides of the gateway's accept path: the HTTP server (uvicorn writes a
response's head and its body apart: two system calls and two TCP segments for a 150-byte
202) and the RabbitMQ connection (aiormq writes each publish's frames apart: one system call
per publish, about a third of the gateway's CPU when every request publishes). Held until the
end of the step they are one; more than ``FLUSH_BYTES`` held go out at once, so a stream
written without a pause is not held in memory. ``close`` and ``write_eof`` send what is held
first, ``abort`` drops it (as the transport's own abort drops its buffer). The rest is the
wrapped transport's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


class CoalescingTransport:
    """Wraps a transport: writes held until the end of the loop's step, then one write."""

    FLUSH_BYTES = 65_536

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data) if not isinstance(data, bytes) else data)
        self._size += len(data)
        if self._size > self.FLUSH_BYTES:
            self.flush()

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is held (nothing once the transport closes: the peer is gone)."""
        if not self._held:
            return
        held, self._held, self._size = self._held, [], 0
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._size = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + int(self._transport.get_write_buffer_size())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


__all__ = ["CoalescingTransport"]
