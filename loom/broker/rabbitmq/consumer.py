"""RabbitMQ deliveries and consumers: one task per delivery, settled exactly once.

``Delivery.retry`` is ``basic.reject(requeue=True)``: since RabbitMQ 4.3 only a reject
counts towards the delivery limit (a nack does not); earlier versions count both. Each
consumer has its own channel with ``basic.qos(prefetch)``; each delivery runs in its own
task, so a slow handler holds one of the ``prefetch`` slots and blocks nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustQueue

from loom.broker.base import BrokerUnavailable, Delivery, Handler, Message, finish_handlers
from loom.broker.rabbitmq.connection import Connection
from loom.broker.rabbitmq.publisher import REPLAY_HEADER, Publisher

log = logging.getLogger("loom.broker.rabbitmq")

DELIVERY_COUNT_HEADER = "x-delivery-count"


class RabbitDelivery(Delivery):
    def __init__(
        self,
        incoming: AbstractIncomingMessage,
        queue: str,
        *,
        connection: Connection,
        publisher: Publisher,
        delivery_limit: int | None,
    ) -> None:
        """``delivery_limit``: the queue's, or None for a queue without one."""
        headers = dict(incoming.headers)
        raw = headers.pop(DELIVERY_COUNT_HEADER, None)
        self._replay_marker = headers.pop(REPLAY_HEADER, None)
        count = raw + 1 if isinstance(raw, int) and not isinstance(raw, bool) else 1
        if incoming.redelivered and count < 2:
            # RabbitMQ 4.3+ does not count hand-backs (channel closed, nack) in the header.
            count = 2
        # On the last delivery a reject makes RabbitMQ dead-letter the message itself.
        final = delivery_limit is not None and count >= delivery_limit
        message = Message(incoming.body, headers, incoming.message_id)
        super().__init__(message, queue, count, final=final)
        self._connection = connection
        self._publisher = publisher
        self._incoming = incoming

    async def ack(self) -> None:
        self._begin_settle()
        await self._connection.settle(self._incoming.ack(), "ack")

    async def retry(self) -> None:
        self._begin_settle()
        await self._connection.settle(self._incoming.reject(requeue=True), "requeue")

    async def dead_letter(self, reason: str) -> None:
        if self.settled:
            raise RuntimeError(f"delivery from {self.queue!r} is already settled")
        # Confirmed copy first; only then ack. If the copy fails the message stays unsettled.
        await self._publisher.dead_letter(self.message, self.queue, reason, self._replay_marker)
        self._begin_settle()
        await self._connection.settle(self._incoming.ack(), "ack a dead-lettered message")

    async def hand_back(self) -> None:
        if not self.settled:
            self._settled = True
            with suppress(Exception):
                await self._incoming.nack(requeue=True)

    def _begin_settle(self) -> None:
        if self.settled:
            raise RuntimeError(f"delivery from {self.queue!r} is already settled")
        self._settled = True


class RabbitConsumer:
    """One ``basic.consume`` on its own channel; every delivery is handled in its own task."""

    def __init__(
        self,
        queue: str,
        handler: Handler,
        *,
        channel: AbstractRobustChannel,
        amqp_queue: AbstractRobustQueue,
        tag: str,
        deliver: DeliveryFactory,
        cancel_timeout: float,
    ) -> None:
        self._queue = queue
        self._handler = handler
        self._channel = channel
        self._amqp_queue = amqp_queue
        self._tag = tag
        self._deliver = deliver
        self._cancel_timeout = cancel_timeout
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._amqp_queue.consume(self.on_message, consumer_tag=self._tag)

    async def on_message(self, incoming: AbstractIncomingMessage) -> None:
        if self._stopping:  # arrived between basic.cancel and cancel-ok
            with suppress(Exception):
                await incoming.nack(requeue=True)
            return
        # A task of Loom's own, not aio-pika's: aiormq throws into its consumer tasks when
        # the channel closes, and a handler half way through (a reply being posted, a lease
        # being taken) must finish and record what it did; only its ack then fails, and the
        # redelivery finds the work done.
        task = asyncio.create_task(self._handle(incoming), name=f"loom-delivery:{self._queue}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, incoming: AbstractIncomingMessage) -> None:
        delivery = self._deliver(incoming, self._queue)
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            await delivery.hand_back()
            raise
        except Exception:
            log.exception(
                "handler for %s failed (delivery %d)", self._queue, delivery.delivery_count
            )
            if not delivery.settled:
                try:
                    await delivery.retry()
                except BrokerUnavailable as exc:
                    log.warning("%s", exc)
        else:
            if not delivery.settled:
                try:
                    await delivery.ack()
                except BrokerUnavailable as exc:
                    log.warning("%s", exc)

    async def stop(self, timeout: float | None) -> None:
        self._stopping = True
        with suppress(Exception):
            async with asyncio.timeout(self._cancel_timeout):
                await self._amqp_queue.cancel(self._tag)
        try:
            await finish_handlers(self._tasks, timeout)
        finally:
            # Whatever is still unacked on this channel goes back to the queue.
            with suppress(Exception):
                await self._channel.close()


class DeliveryFactory:
    """Makes the ``RabbitDelivery`` of an incoming message, knowing each queue's limit."""

    def __init__(
        self,
        connection: Connection,
        publisher: Publisher,
        delivery_limit: int,
        limited: tuple[str, ...],
    ) -> None:
        self._connection = connection
        self._publisher = publisher
        self._delivery_limit = delivery_limit
        self._limited = limited

    def __call__(self, incoming: AbstractIncomingMessage, queue: str) -> RabbitDelivery:
        limit = self._delivery_limit if queue in self._limited else None
        return RabbitDelivery(
            incoming,
            queue,
            connection=self._connection,
            publisher=self._publisher,
            delivery_limit=limit,
        )
