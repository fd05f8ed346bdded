"""Publishes in flight together go to RabbitMQ in one socket write.

aiormq writes every publish (its method, header and body frames) with a write of its own,
and waits for that write before the next publish on the channel may start: one system call
per publish, which on loopback also pays for the broker side's wake-up. In the gateway that
was about a third of the process's CPU. Two changes make the publishes of one step of the
event loop one write:

- the connection's socket is wrapped in ``CoalescingTransport`` (``CoalescingTransportFactory``,
  handed to aiormq through its public ``transport_factory`` parameter, which aio-pika lets
  through as a connection parameter of ``CoalescingRobustConnection``);
- a publish does not wait for its frames to reach the socket before the next one is queued
  (``basic_publish(wait=False)``, ``publish``), nor queue them while aiormq's frame queue is
  full (which would make the publishes after it go one per step of the loop).

Each publish still waits for its own confirmation: its own delivery tag, acked, nacked or
returned by the broker on its own; a lost connection fails every publish not yet confirmed.
Nothing is confirmed before its bytes were written, so waiting for the write bought nothing
but the serialisation. Back-pressure stays: while the socket's buffer is past its high-water
mark (the broker is not reading), a new publish waits for it to drain before it is queued,
so what is buffered is bounded by the publishes already under way when the broker stopped.

The one piece outside the libraries' declared interfaces is ``wait``: aiormq's concrete
``Channel.basic_publish`` takes it, its abstract ``AbstractChannel`` does not declare it.
``publish`` checks for the concrete class and falls back to a plain publish otherwise;
tests/test_amqp_batching.py fails if aiormq drops the parameter.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import ConnectionParameter
from aiormq.abc import ConfirmationFrameType
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

from loom.core.coalescing import CoalescingTransport


class _FlowProtocol(asyncio.StreamReaderProtocol):
    """The stream protocol, with an event that is set while the transport takes writes
    (cleared between its ``pause_writing`` and ``resume_writing``)."""

    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.writable.clear()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.writable.set()  # whoever waits finds the connection gone


class CoalescingTransportFactory(aiormq.TransportFactory):
    """aiormq's TCP (or TLS, for ``amqps://``) connection, its writes coalesced per step.

    The stream pair is made as ``asyncio.open_connection`` makes it, with the transport
    the writer writes to wrapped; the reader reads from the socket itself."""

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = None
        if url.scheme == "amqps" and provider is not None:
            ssl = await provider.get_context()
        if url.host is None or url.port is None:  # aiormq gives the port its default
            raise AMQPConnectionError(f"no host and port in the broker URL {url.host!r}")
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = _FlowProtocol(reader, loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, host=url.host, port=url.port, ssl=ssl, **kwargs
            )
        except OSError as e:  # what aiormq's own factories raise
            raise AMQPConnectionError(*e.args) from e
        coalescing = cast(asyncio.WriteTransport, self.wrap(transport, loop))
        self.writable = protocol.writable
        return reader, asyncio.StreamWriter(coalescing, protocol, reader, loop)

    writable: asyncio.Event | None = None
    """Set while the newest connection's socket takes writes; cleared while its buffer is
    past the high-water mark (the broker is not reading: RabbitMQ stops reading publishers'
    sockets under a memory or disk alarm)."""

    def wrap(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> Any:
        """The transport the writer writes to."""
        return CoalescingTransport(transport, loop)


ROOM_STEPS = 8
"""Steps of the event loop a publish waits for room in aiormq's frame queue."""


def _factory(value: Any) -> aiormq.TransportFactory:
    if isinstance(value, aiormq.TransportFactory):
        return value
    raise ValueError("not a transport factory")  # from a URL's query: ignored


class CoalescingRobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, letting ``transport_factory`` through to aiormq (a
    connection parameter, as aio-pika's own ``reconnect_interval`` is one); every reconnect
    uses it again."""

    PARAMETERS = (
        *aio_pika.RobustConnection.PARAMETERS,
        ConnectionParameter(name="transport_factory", parser=_factory, is_kwarg=True),
    )


async def publish(
    channel: aiormq.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: aiormq.spec.Basic.Properties,
    *,
    timeout: float | None,
    writable: asyncio.Event | None = None,
) -> ConfirmationFrameType | None:
    """Publish ``body`` with ``properties`` (mandatory) and return the broker's confirmation, within
    ``timeout`` seconds, without waiting for its frames to be written before the next
    publish on the channel is queued. Raises as aio-pika's ``Exchange.publish`` does
    (``DeliveryError`` for a nack, ``PublishError`` for a return, channel and connection
    errors when they close)."""
    arguments: dict[str, Any] = {
        "exchange": exchange,
        "routing_key": routing_key,
        "properties": properties,
        "mandatory": True,
        "timeout": timeout,
    }
    queue = channel.connection.write_queue
    for _ in range(ROOM_STEPS):
        # aiormq's frame queue is bounded (10 frames). A publish waiting for room holds the
        # channel's lock, and the publishes queued behind a lock get it one per step of the
        # loop: one write each, for as long as new ones keep coming. So wait for the queue's
        # writer to take what is queued (it takes all of it in one step) before queuing;
        # only a few steps, though: with the socket's buffer full, the writer waits for the
        # broker, and waiting for the queue's room is aiormq's own back-pressure.
        if not queue.full():
            break
        await asyncio.sleep(0)
    if writable is not None and not writable.is_set():
        # The broker is not reading: nothing waits for a write below, so without this the
        # socket's buffer would grow by every publish until the broker reads again (and a
        # publish that timed out would still land then). Wait for it within the timeout.
        async with asyncio.timeout(timeout):
            await writable.wait()
    if isinstance(channel, aiormq.Channel):
        return await channel.basic_publish(body, wait=False, **arguments)
    return await channel.basic_publish(body, **arguments)  # pragma: no cover


__all__ = [
    "CoalescingRobustConnection",
    "CoalescingTransportFactory",
    "publish",
]
