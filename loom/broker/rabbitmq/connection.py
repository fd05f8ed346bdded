"""The RabbitMQ connection: one robust (auto-reconnecting) connection, its publisher and
admin channels, and the errors it turns into ``BrokerUnavailable`` (passwords masked)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from urllib.parse import unquote, urlsplit, urlunsplit

from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.exceptions import AMQPConnectionError, ChannelClosed, ChannelInvalidStateError
from yarl import URL

from loom.broker.base import BrokerUnavailable, namespaced
from loom.broker.rabbitmq.batching import CoalescingRobustConnection, CoalescingTransportFactory

ERRORS = (TimeoutError, *CONNECTION_EXCEPTIONS)
"""What talking to RabbitMQ raises when it is away or too slow."""
LOST = (ChannelInvalidStateError, ChannelClosed, AMQPConnectionError)
"""A publish that failed because the channel or connection went away (worth a retry)."""


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_CONNECT_LOGGERS = ("aiormq.connection", "aio_pika.robust_connection")


@contextmanager
def _first_attempt_quiet() -> Iterator[None]:
    """Mute the libraries' own records of a failed first connect (an error, then
    "Reconnecting after 5 seconds", though none follows): ``open`` raises BrokerUnavailable
    with the reason, and a missing RabbitMQ is reported in that one line."""

    def mute(record: logging.LogRecord) -> bool:
        return False

    loggers = [logging.getLogger(name) for name in _CONNECT_LOGGERS]
    for logger in loggers:
        logger.addFilter(mute)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(mute)


class Connection:
    """The connection and its two long-lived channels: ``publisher`` (publisher confirms,
    ``on_return_raises``; robust, so what is declared on it is declared again after a
    reconnect) and ``admin`` (no confirms: peeks, depths, deletes)."""

    def __init__(self, url: str, *, connect_timeout: float, namespace: str) -> None:
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an AMQP URL: {mask_url(url)!r} (expected amqp:// or amqps://)")
        self.url = mask_url(url)
        self._url = url
        password = urlsplit(url).password or ""
        # Longest first, so the percent-decoded form never leaves part of the raw one behind.
        self._secrets = sorted({password, unquote(password)} - {""}, key=len, reverse=True)
        self.connect_timeout = connect_timeout
        self.namespace = namespace
        self.transport_factory = CoalescingTransportFactory()
        """How the socket to RabbitMQ is made (each reconnect makes a new one)."""
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._admin: AbstractRobustChannel | None = None
        self._lock = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    @property
    def connected(self) -> bool:
        """Open and not in the middle of a reconnect."""
        connection = self._connection
        return self.is_open and connection is not None and connection.connected.is_set()

    async def open(self, declare: Callable[[AbstractRobustChannel], Awaitable[None]]) -> bool:
        """Connect, open the channels and ``declare`` on the publisher channel. False when
        already open (idempotent)."""
        async with self._lock:
            if self.is_open:
                return False
            try:
                with _first_attempt_quiet():
                    # aio_pika.connect_robust, with the connection class that lets the
                    # transport factory through: publishes in flight together go out in
                    # one write (batching.py).
                    connection = CoalescingRobustConnection(
                        URL(self._url),
                        client_properties={"connection_name": f"loom {self.namespace}".strip()},
                        transport_factory=self.transport_factory,
                    )
                    await connection.connect(timeout=self.connect_timeout)
            except ERRORS as exc:
                raise self.unavailable("cannot connect", exc) from exc
            try:
                async with asyncio.timeout(self.connect_timeout):
                    publisher = await connection.channel(on_return_raises=True)
                    admin = await connection.channel(publisher_confirms=False)
                    await declare(publisher)
            except BaseException as problem:
                with suppress(Exception):
                    await connection.close()
                if isinstance(problem, ERRORS):
                    raise self.unavailable("cannot declare the topology", problem) from problem
                raise
            self._connection, self._publisher, self._admin = connection, publisher, admin
            return True

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._publisher = self._admin = None
        if connection is not None:
            with suppress(Exception):
                await connection.close()

    def connection(self) -> AbstractRobustConnection:
        return self._channels()[0]

    def publisher(self) -> AbstractRobustChannel:
        return self._channels()[1]

    def admin(self) -> AbstractRobustChannel:
        return self._channels()[2]

    def is_publisher(self, channel: AbstractRobustChannel) -> bool:
        """False once ``channel`` is no longer this connection's publisher (closed by us)."""
        return self._publisher is channel

    def name(self, logical: str) -> str:
        """The broker-side name of exchange or queue ``logical`` (namespaced)."""
        return namespaced(logical, self.namespace)

    def logical(self, physical: str) -> str:
        prefix = namespaced("", self.namespace)
        return physical.removeprefix(prefix) if prefix else physical

    async def settle(self, action: Awaitable[None], what: str) -> None:
        """Await an ack, nack or reject; a lost connection becomes ``BrokerUnavailable``."""
        try:
            await action
        except ERRORS as exc:
            raise self.unavailable(
                f"cannot {what}; the broker will deliver the message again", exc
            ) from exc

    def unavailable(self, what: str, exc: BaseException | None = None) -> BrokerUnavailable:
        detail = ""
        if exc is not None:
            detail = f": {type(exc).__name__}: {str(exc) or repr(exc)}"
            for secret in self._secrets:
                detail = detail.replace(secret, "***")
        return BrokerUnavailable(f"RabbitMQ at {self.url}: {what}{detail}")

    def _channels(
        self,
    ) -> tuple[AbstractRobustConnection, AbstractRobustChannel, AbstractRobustChannel]:
        connection, publisher, admin = self._connection, self._publisher, self._admin
        if connection is None or publisher is None or admin is None or connection.is_closed:
            raise BrokerUnavailable(f"RabbitMQ broker {self.url} is not started (or closed)")
        return connection, publisher, admin
