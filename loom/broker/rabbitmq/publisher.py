"""Confirmed publishing on RabbitMQ.

Publishing goes through the publisher channel with publisher confirms and
``on_return_raises``; every message is persistent and ``mandatory``, so an unroutable one
raises instead of vanishing, and ``publish`` returns only after the broker's ``Basic.Ack``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from aiormq import spec
from pamqp.commands import Basic

from loom.broker.base import ORIGIN_HEADER, REASON_HEADER, Message
from loom.broker.rabbitmq import batching
from loom.broker.rabbitmq.connection import LOST, Connection
from loom.broker.rabbitmq.declare import Declarer

log = logging.getLogger("loom.broker.rabbitmq")

REPLAY_HEADER = "x-loom-replay"
"""Marks the messages one ``replay_dead_letters`` call sent, so if one comes back to the
dead-letter queue during that call, the call stops there instead of replaying it again."""
RETRY_PAUSE = 0.1


def outgoing(message: Message, **properties: Any) -> aio_pika.Message:
    """``message`` as a persistent AMQP message (with an id, made up if it has none)."""
    return aio_pika.Message(
        message.body,
        headers=dict(message.headers),
        message_id=message.message_id or uuid.uuid4().hex,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **properties,
    )


def persistent(message: Message) -> spec.Basic.Properties:
    """The AMQP properties ``outgoing(message).properties`` has, made without the
    ``aio_pika.Message`` (whose attribute checks cost as much as the rest of a publish)."""
    return PersistentProperties(
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=dict(message.headers),
        message_id=message.message_id or uuid.uuid4().hex,
        priority=0,
    )


_PERSISTENT_FLAGS = 0x2000 | 0x1000 | 0x0800 | 0x0080
"""The property flags of headers, delivery mode, priority and message id (AMQP 0-9-1)."""
_PERSISTENT_HEAD = struct.pack(">HIBB", _PERSISTENT_FLAGS, 0, 2, 0)
"""The flags, an empty header table, delivery mode 2 (persistent) and priority 0: what
precedes the message id in the properties of every publish without headers."""


class PersistentProperties(spec.Basic.Properties):
    """The properties ``persistent`` makes, encoded in a few operations when the message
    has no headers (the gateway's publishes while tracing is off): pamqp walks and
    type-checks all fourteen properties for each message, a tenth of a publish's CPU in
    the gateway. Anything else (headers, another property set, an id of more than 255
    bytes) is encoded by pamqp, byte for byte what the fast path would give."""

    # No ``__slots__ = ()`` here: pamqp's ``marshal`` walks ``self.__slots__``, so the
    # slow path would then encode no property at all.

    def marshal(self) -> bytes:
        message_id = self.message_id
        if (
            type(message_id) is str
            and message_id
            and self.headers == {}
            and self.delivery_mode == 2
            and self.priority == 0
            and self.content_type is None
            and self.content_encoding is None
            and self.correlation_id is None
            and self.reply_to is None
            and self.expiration is None
            and self.timestamp is None
            and self.message_type is None
            and self.user_id is None
            and self.app_id is None
            and self.cluster_id == ""
        ):
            encoded = message_id.encode()
            if len(encoded) <= 255:
                return _PERSISTENT_HEAD + bytes((len(encoded),)) + encoded
        return super().marshal()


def _where(exchange: AbstractExchange, routing_key: str) -> str:
    return f"exchange {exchange.name!r} with routing key {routing_key!r}"


class Publisher:
    """Publishes on the connection's publisher channel and waits for the confirmation."""

    def __init__(self, connection: Connection, declarer: Declarer, *, timeout: float) -> None:
        self.connection = connection
        self.declarer = declarer
        self.timeout = timeout

    async def publish(self, exchange: str, routing_key: str, message: Message) -> None:
        """Publish ``message`` to the topology's ``exchange``, confirmed."""
        target = self.declarer.exchange(exchange)
        await self.send_body(target, routing_key, message.body, persistent(message))

    async def dead_letter(
        self, message: Message, queue: str, reason: str, replay_marker: object = None
    ) -> None:
        """Put ``message`` in the dead letters as if it died in ``queue`` because of
        ``reason``, confirmed (``replay_marker``: the replay that sent it, if one did)."""
        headers = {**message.headers, REASON_HEADER: reason, ORIGIN_HEADER: queue}
        if replay_marker is not None:
            headers[REPLAY_HEADER] = replay_marker
        letter = Message(message.body, headers, message.message_id)
        target = self.declarer.exchange(self.declarer.topology.dead_letter_exchange)
        stamped = outgoing(letter, timestamp=datetime.now(UTC))
        await self.send(target, self.connection.name(queue), stamped)

    async def send(
        self, exchange: AbstractExchange, routing_key: str, message: aio_pika.Message
    ) -> None:
        """Publish ``message`` and wait for the broker's ack (see ``send_body``)."""
        await self.send_body(exchange, routing_key, message.body, message.properties)

    async def send_body(
        self,
        exchange: AbstractExchange,
        routing_key: str,
        body: bytes,
        properties: spec.Basic.Properties,
    ) -> None:
        """Publish and wait for the broker's ack. While the robust connection recovers from a
        drop, wait for it (within the timeout) and publish again: a copy may then arrive
        twice, which the dedupe keys absorb; a silent loss would be worse."""
        unavailable = self.connection.unavailable
        publisher = self.connection.publisher()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            while True:
                try:
                    if publisher.is_closed or not self.connection.connected:
                        async with asyncio.timeout_at(deadline):  # a reconnect under way
                            await publisher.ready()
                            channel = await publisher.get_underlay_channel()
                    else:  # connected: returns at once, so no timer is armed for it
                        channel = await publisher.get_underlay_channel()
                    # The publish's own timeout (aiormq's) bounds it and its confirmation.
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise TimeoutError
                    confirmation = await batching.publish(
                        channel,
                        exchange.name,
                        routing_key,
                        body,
                        properties,
                        timeout=remaining,
                        writable=self.connection.transport_factory.writable,
                    )
                    break
                except LOST as exc:
                    if not self.connection.is_publisher(publisher):  # closed by us
                        raise unavailable("the broker was closed", exc) from exc
                    log.warning("publish to %s interrupted (%s); retrying",
                                _where(exchange, routing_key), exc)  # fmt: skip
                    async with asyncio.timeout_at(deadline):
                        await asyncio.sleep(RETRY_PAUSE)
        except PublishError as exc:
            where = _where(exchange, routing_key)  # worked out only when it went wrong
            raise unavailable(f"unroutable: no queue took the message to {where}", exc) from exc
        except DeliveryError as exc:
            where = _where(exchange, routing_key)
            raise unavailable(f"the broker refused the message to {where}", exc) from exc
        except TimeoutError as exc:
            where = _where(exchange, routing_key)
            raise unavailable(f"no confirmation within {self.timeout}s for {where}", exc) from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise unavailable(f"publish to {_where(exchange, routing_key)} failed", exc) from exc
        if not isinstance(confirmation, Basic.Ack):
            where = _where(exchange, routing_key)
            raise unavailable(f"publish to {where} was not confirmed ({confirmation!r})")
