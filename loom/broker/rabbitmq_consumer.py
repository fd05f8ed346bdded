"""RabbitMQ deliveries and consumers: one task per delivery, settled exactly once."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustQueue

from loom import metrics
from loom.broker.base import WORK_QUEUES, BrokerUnavailable, Delivery, Handler, Message

if TYPE_CHECKING:
    from loom.broker.rabbitmq import RabbitMQBroker

log = logging.getLogger("loom.broker.rabbitmq")

DELIVERY_COUNT_HEADER = "x-delivery-count"
REPLAY_HEADER = "x-loom-replay"
"""Marks the messages one ``replay_dead_letters`` call sent, so if one comes back to the
dead-letter queue during that call, the call stops there instead of replaying it again."""


class RabbitDelivery(Delivery):
    def __init__(
        self, broker: RabbitMQBroker, incoming: AbstractIncomingMessage, queue: str
    ) -> None:
        headers = dict(incoming.headers)
        raw = headers.pop(DELIVERY_COUNT_HEADER, None)
        self._replay_marker = headers.pop(REPLAY_HEADER, None)
        count = raw + 1 if isinstance(raw, int) and not isinstance(raw, bool) else 1
        if incoming.redelivered and count < 2:
            # RabbitMQ 4.3+ does not count hand-backs (channel closed, nack) in the header.
            count = 2
        super().__init__(Message(incoming.body, headers, incoming.message_id), queue, count)
        self._broker = broker
        self._incoming = incoming

    async def ack(self) -> None:
        self._begin_settle()
        await self._broker._settle(self._incoming.ack(), "ack")

    async def retry(self) -> None:
        self._begin_settle()
        await self._broker._settle(self._incoming.reject(requeue=True), "requeue")
        if self.delivery_count >= self._broker.delivery_limit and self.queue in WORK_QUEUES:
            # This was the last delivery: RabbitMQ dead-letters the message itself (the queue's
            # x-delivery-limit), where Loom cannot see it; count it here, where it is known.
            metrics.DEAD_LETTERS.labels(self.queue).inc()

    async def dead_letter(self, reason: str) -> None:
        if self.settled:
            raise RuntimeError(f"delivery from {self.queue!r} is already settled")
        # Confirmed copy first; only then ack. If the copy fails the message stays unsettled.
        await self._broker._publish_dead_letter(
            self.message, self.queue, reason, self._replay_marker
        )
        metrics.DEAD_LETTERS.labels(self.queue).inc()
        self._begin_settle()
        await self._broker._settle(self._incoming.ack(), "ack a dead-lettered message")

    async def hand_back(self) -> None:
        if not self.settled:
            self.settled = True
            with suppress(Exception):
                await self._incoming.nack(requeue=True)

    def _begin_settle(self) -> None:
        if self.settled:
            raise RuntimeError(f"delivery from {self.queue!r} is already settled")
        self.settled = True


class RabbitConsumer:
    """One ``basic.consume`` on its own channel; every delivery is handled in its own task."""

    def __init__(
        self,
        broker: RabbitMQBroker,
        queue: str,
        handler: Handler,
        channel: AbstractRobustChannel,
        amqp_queue: AbstractRobustQueue,
        tag: str,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._channel = channel
        self._amqp_queue = amqp_queue
        self._tag = tag
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

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
        delivery = RabbitDelivery(self._broker, incoming, self._queue)
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
            async with asyncio.timeout(self._broker.publish_timeout):
                await self._amqp_queue.cancel(self._tag)
        try:
            if self._tasks and (timeout is None or timeout > 0):
                await asyncio.wait(set(self._tasks), timeout=timeout)
        finally:
            pending = [task for task in self._tasks if not task.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # Whatever is still unacked on this channel goes back to the queue.
            with suppress(Exception):
                await self._channel.close()
