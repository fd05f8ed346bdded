"""Delivery policy, one policy per module, as wrappers around broker handlers.

A handler is ``Callable[[Delivery], Awaitable[None]]``; each wrapper takes one and returns
one, so a consumer composes the policies it wants around its own handler (outermost first)::

    handler = count_dead_letters(backoff(consumer.handle))

- ``backoff``: wait an outage of Redis or RabbitMQ out in place, spending no delivery;
- ``dead_letters``: count every dead letter once, in ``loom_dead_letters_total{queue}``;
- ``retry_budget``: retry on a time budget (pause, requeue a copy that counts the attempt)
  instead of on the broker's delivery limit;
- ``poison``: count failures in a row per key (outages exempt), and say when to give up.
"""

from __future__ import annotations

from loom.delivery.backoff import OUTAGES, Backoff, backoff
from loom.delivery.dead_letters import count_dead_letters, dead_letter
from loom.delivery.poison import Markers, PoisonLimit
from loom.delivery.retry_budget import RetryBudget, RetryLater

__all__ = [
    "OUTAGES",
    "Backoff",
    "Markers",
    "PoisonLimit",
    "RetryBudget",
    "RetryLater",
    "backoff",
    "count_dead_letters",
    "dead_letter",
]
