"""Backoff: wait an outage of Redis or RabbitMQ out, instead of spending deliveries on it.

A delivery whose handling fails because a backend is away (``OUTAGES``) is not handed back
to the broker at once: that would spend the message's delivery limit in milliseconds and
dead-letter it although nothing is wrong with it. The handler is called again, in place,
after a pause that doubles (``first``, ``2 * first``, ... up to ``most`` seconds), for up to
``patience`` seconds; only then does the delivery go back to the broker (one delivery
counted). The consumer's other deliveries wait the same way, so a consumer facing an outage
pauses rather than churns.
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
    """How long to pause between attempts at a delivery that failed on ``on``, and how long
    (``patience``, seconds) one delivery waits in place before it goes back to the broker."""

    first: float = 0.5
    most: float = 10.0
    on: tuple[type[Exception], ...] = OUTAGES
    patience: float = 300.0

    def pause(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed attempt."""
        return min(self.first * 2.0 ** min(max(attempt - 1, 0), 30), self.most)


def backoff(
    handler: Handler,
    policy: Backoff = Backoff(),
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Handler:
    """``handler``, with outages (``policy.on``) of a delivery it left unsettled waited out:
    the handler is tried again after each pause, for up to ``policy.patience`` seconds;
    then the outage is re-raised and the delivery goes back to the broker."""

    async def patient(delivery: Delivery) -> None:
        attempt, waited = max(delivery.delivery_count, 1), 0.0
        while True:
            try:
                await handler(delivery)
                return
            except policy.on as problem:
                if delivery.settled:  # nothing to try again
                    raise
                pause = policy.pause(attempt)
                if waited + pause > policy.patience:
                    logger.warning(
                        "message %s from %s: %s for %.0fs; handing it back to the broker",
                        delivery.message.message_id, delivery.queue, problem, waited,
                    )  # fmt: skip
                    raise
                logger.warning(
                    "message %s from %s (attempt %d): %s; waiting it out, next try in %.1fs",
                    delivery.message.message_id, delivery.queue, attempt, problem, pause,
                )  # fmt: skip
                await sleep(pause)
                attempt, waited = attempt + 1, waited + pause

    return patient
