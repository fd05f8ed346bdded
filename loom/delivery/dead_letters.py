"""Dead-letter counting: every dead letter counted once, in ``loom_dead_letters_total{queue}``.

Brokers do not count: a delivery's ``dead_letter()`` is counted here, and so is a ``retry()``
(or a failure) of its ``final`` delivery, which the broker dead-letters itself (RabbitMQ
does it where Loom cannot see it). Work given up after its delivery was settled goes
through ``dead_letter()`` below.
"""

from __future__ import annotations

import logging

from loom import metrics
from loom.broker.base import Broker, BrokerUnavailable, Delivery, Handler, Message

logger = logging.getLogger("loom.delivery")


class _Counted(Delivery):
    """A delivery that counts the dead letters its settling makes."""

    def __init__(self, inner: Delivery) -> None:
        super().__init__(inner.message, inner.queue, inner.delivery_count, final=inner.final)
        self.inner = inner

    @property
    def settled(self) -> bool:
        return self.inner.settled

    async def ack(self) -> None:
        await self.inner.ack()

    async def retry(self) -> None:
        await self.inner.retry()
        if self.final:
            metrics.DEAD_LETTERS.labels(self.queue).inc()

    async def dead_letter(self, reason: str) -> None:
        await self.inner.dead_letter(reason)
        metrics.DEAD_LETTERS.labels(self.queue).inc()


def count_dead_letters(handler: Handler) -> Handler:
    """``handler``, with every dead letter of its deliveries counted once."""

    async def counted(delivery: Delivery) -> None:
        watched = _Counted(delivery)
        try:
            await handler(watched)
        except Exception:
            # Settled here rather than by the broker, so a last delivery's retry is counted.
            if not delivery.settled:
                try:
                    await watched.retry()
                except BrokerUnavailable as lost:
                    # The connection is gone: RabbitMQ redelivers the unacked message itself.
                    # The handler's own error is the one worth reporting.
                    logger.warning(
                        "message %s not handed back: %s", delivery.message.message_id, lost
                    )
            raise

    return counted


async def dead_letter(broker: Broker, message: Message, origin_queue: str, reason: str) -> None:
    """``broker.dead_letter(...)``, counted: for work that failed after its delivery was
    settled (``loom dlq replay`` sends it back to ``origin_queue``)."""
    await broker.dead_letter(message, origin_queue, reason)
    metrics.DEAD_LETTERS.labels(origin_queue).inc()
