"""The broker port on RabbitMQ (aio-pika): quorum queues, publisher confirms, manual acks.

The parts: ``connection`` (the robust connection and its channels), ``declare`` (the
topology), ``publisher`` (confirmed publishing), ``consumer`` (deliveries, one task each)
and ``dead_letters`` (peek and replay). ``namespace`` prefixes every exchange and queue
name (``<namespace>.loom.work``), so deployments or test runs can share a broker; callers
keep using the logical names.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import suppress
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractRobustChannel

from loom.broker.base import (
    DEFAULT_DELIVERY_LIMIT,
    Broker,
    DeadLetter,
    Handler,
    Message,
    Topology,
)
from loom.broker.rabbitmq.connection import ERRORS, Connection
from loom.broker.rabbitmq.consumer import DeliveryFactory, RabbitConsumer
from loom.broker.rabbitmq.dead_letters import DeadLetters
from loom.broker.rabbitmq.declare import Declarer
from loom.broker.rabbitmq.publisher import Publisher

if TYPE_CHECKING:  # aio-pika's own protocol library (pamqp) types the broker's answer
    from pamqp.commands import Queue


class RabbitMQBroker(Broker):
    """The broker port on RabbitMQ, through one robust (auto-reconnecting) connection.

    ``cancel(tag, timeout=...)`` sends ``basic.cancel`` at once, lets in-flight handlers
    settle for up to ``timeout`` seconds, then cancels the rest, nacks their messages back
    to the queue and closes the consumer's channel.
    """

    def __init__(
        self,
        url: str,
        *,
        topology: Topology,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        namespace: str = "",
    ) -> None:
        if delivery_limit < 1:
            raise ValueError(f"delivery_limit must be at least 1, not {delivery_limit}")
        self._connection = Connection(url, connect_timeout=connect_timeout, namespace=namespace)
        self.url = self._connection.url
        self.topology = topology
        self.delivery_limit = delivery_limit
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.namespace = namespace
        self._declarer = Declarer(self._connection, topology, delivery_limit)
        self._publisher = Publisher(self._connection, self._declarer, timeout=publish_timeout)
        self._dead_letters = DeadLetters(self._connection, self._publisher, delivery_limit)
        self._deliver = DeliveryFactory(
            self._connection, self._publisher, delivery_limit, topology.limited
        )
        self._consumers: dict[str, RabbitConsumer] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._connection.open(self._declarer.declare)

    async def close(self) -> None:
        consumers = list(self._consumers.values())
        self._consumers.clear()
        for consumer in consumers:
            await consumer.stop(timeout=0)
        await self._connection.close()

    async def ping(self) -> bool:
        try:
            admin = self._connection.admin()
            async with asyncio.timeout(self.publish_timeout):
                channel = await admin.get_underlay_channel()
                first = self.topology.bindings[0]
                await channel.exchange_declare(
                    self._connection.name(first.exchange),
                    exchange_type=first.exchange_type,
                    passive=True,
                )
        except Exception:
            return False
        return True

    @property
    def consuming(self) -> bool:
        return bool(self._consumers) and self._connection.connected

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, exchange: str, routing_key: str, message: Message) -> None:
        await self._publisher.publish(exchange, routing_key, message)

    async def dead_letter(self, message: Message, origin_queue: str, reason: str) -> None:
        self.topology.check_queue(origin_queue)
        await self._publisher.dead_letter(message, origin_queue, reason)

    # -- consuming -------------------------------------------------------------------------

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16) -> str:
        self.topology.check_queue(queue)
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        connection = self._connection.connection()
        tag = f"loom.{queue}.{uuid.uuid4().hex[:12]}"
        channel: AbstractRobustChannel | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=prefetch)
                amqp_queue = await channel.declare_queue(
                    self._connection.name(queue),
                    durable=True,
                    arguments=self._declarer.arguments(queue),
                )
                consumer = RabbitConsumer(
                    queue,
                    handler,
                    channel=channel,
                    amqp_queue=amqp_queue,
                    tag=tag,
                    deliver=self._deliver,
                    cancel_timeout=self.publish_timeout,
                )
                await consumer.start()
        except ERRORS as exc:
            if channel is not None:
                with suppress(Exception):
                    await channel.close()
            raise self._connection.unavailable(f"cannot consume {queue!r}", exc) from exc
        self._consumers[tag] = consumer
        return tag

    async def cancel(self, tag: str, *, timeout: float | None = None) -> None:
        consumer = self._consumers.pop(tag, None)
        if consumer is not None:
            await consumer.stop(timeout)

    # -- dead letters and inspection -------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return await self._dead_letters.peek(limit)

    async def replay_dead_letters(
        self, limit: int | None = None, *, message_id: str | None = None
    ) -> int:
        return await self._dead_letters.replay(limit, message_id)

    async def queue_depth(self, queue: str) -> int:
        result = await self._inspect(queue, "the depth")
        return result.message_count or 0

    async def queue_consumers(self, queue: str) -> int:
        result = await self._inspect(queue, "the consumers")
        return result.consumer_count or 0

    async def _inspect(self, queue: str, what: str) -> Queue.DeclareOk:
        """The broker's own count of ``queue``'s messages and consumers, asked now."""
        self.topology.check_queue(queue)
        admin = self._connection.admin()
        try:
            async with asyncio.timeout(self.publish_timeout):
                channel = await admin.get_underlay_channel()
                # Not admin.declare_queue(passive=True): aio-pika answers that from a cache.
                result = await channel.queue_declare(self._connection.name(queue), passive=True)
        except ERRORS as exc:
            raise self._connection.unavailable(f"cannot read {what} of {queue!r}", exc) from exc
        if result is None:  # only with nowait, which a passive declare never asks for
            raise self._connection.unavailable(f"no answer reading {what} of {queue!r}")
        return result

    async def delete_topology(self) -> None:
        """Delete this namespace's queues and exchanges (test teardown). Needs a namespace."""
        await self._declarer.delete()
