"""Backoff: pause before a redelivery while Redis or RabbitMQ is briefly away.

Without it, a failover would spend a message's delivery limit in milliseconds and
dead-letter it although nothing is wrong with it. The pause doubles with each delivery
(``first``, ``2 * first``, ...) up to ``most`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loom.broker.base import BrokerUnavailable, Delivery, Handler
from loom.state.base import StateUnavailable

logger = logging.getLogger("loom.delivery")

OUTAGES: tuple[type[Exception], ...] = (StateUnavailable, BrokerUnavailable)
"""The errors that say a backend is away, not that the message is wrong."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to pause before the redelivery of a delivery that failed on ``on``."""

    first: float = 0.5
    most: float = 10.0
    on: tuple[type[Exception], ...] = OUTAGES

    def pause(self, delivery_count: int) -> float:
        """Seconds to wait after the ``delivery_count``-th delivery failed."""
        return min(self.first * 2.0 ** min(max(delivery_count - 1, 0), 30), self.most)


def backoff(
    handler: Handler,
    policy: Backoff = Backoff(),
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Handler:
    """``handler``, pausing before it re-raises an outage (``policy.on``) of a delivery it
    left unsettled, so the broker's redelivery comes after the pause."""

    async def paced(delivery: Delivery) -> None:
        try:
            await handler(delivery)
        except policy.on as problem:
            if delivery.settled:  # nothing comes back to be paced
                raise
            pause = policy.pause(delivery.delivery_count)
            logger.warning(
                "message %s from %s (delivery %d): %s; retrying in %.1fs",
                delivery.message.message_id, delivery.queue, delivery.delivery_count,
                problem, pause,
            )  # fmt: skip
            await sleep(pause)
            raise

    return paced
