"""Retry budgets: retry on time, not on the broker's delivery limit.

A handler wrapped by ``RetryBudget.wrap`` raises ``RetryLater`` when an attempt failed in a
way worth another try. The wrapper then pauses (doubling from ``retry_delay``, at least the
error's ``retry_after``, at most ``max_delay``), requeues a copy that counts the attempt
(``RetryLater.requeue``, confirmed) and only then acks the original. So an outage or a long
Retry-After delays the work instead of losing it; work still failing ``budget`` seconds
after its first failure is dead-lettered, saying how long and how often it was tried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loom.broker.base import BrokerUnavailable, Delivery, Handler

logger = logging.getLogger("loom.delivery")

Requeue = Callable[[int, float], Awaitable[None]]
"""Publishes the copy that counts the attempt: ``(attempts, first_failed_at)``."""


class RetryLater(Exception):
    """Raised by a wrapped handler: this attempt failed; try again within the budget.

    ``attempts`` and ``first_failed_at`` are what the message says of its earlier attempts;
    ``subject`` names the work in logs ("reply of run r1 to slack"), ``what`` in the dead
    letter's reason ("slack reply"); ``gave_up`` runs when the budget is spent."""

    def __init__(
        self,
        problem: Exception,
        *,
        attempts: int,
        first_failed_at: float | None,
        requeue: Requeue,
        subject: str,
        what: str,
        gave_up: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(str(problem))
        self.problem = problem
        self.attempts = attempts
        self.first_failed_at = first_failed_at
        self.requeue = requeue
        self.subject = subject
        self.what = what
        self.gave_up = gave_up


@dataclass(slots=True)
class RetryBudget:
    """The pauses and the budget; ``clock`` (Unix time) and ``sleep`` are injectable, so
    tests run a budget without waiting."""

    retry_delay: float = 1.0
    budget: float = 900.0
    max_delay: float = 120.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def pause(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failure: doubling from ``retry_delay``,
        at least ``retry_after``, at most ``max_delay``."""
        backoff = self.retry_delay * 2.0 ** min(max(attempts - 1, 0), 30)
        return min(max(backoff, retry_after or 0.0), self.max_delay)

    def wrap(self, handler: Handler) -> Handler:
        """``handler``, with its ``RetryLater`` failures retried on this budget."""

        async def budgeted(delivery: Delivery) -> None:
            try:
                await handler(delivery)
            except RetryLater as later:
                await self.retry_later(delivery, later)

        return budgeted

    async def retry_later(self, delivery: Delivery, later: RetryLater) -> None:
        """Pause, requeue a copy that counts this attempt, ack the original; past the
        budget, dead-letter it instead."""
        now = self.clock()
        first = now if later.first_failed_at is None else later.first_failed_at
        attempts = later.attempts + 1
        elapsed = max(now - first, 0.0)
        remaining = self.budget - elapsed
        if remaining <= 0:
            if later.gave_up is not None:
                later.gave_up()
            reason = (
                f"{later.what} failed {attempts} times over {duration(elapsed)} "
                f"(retry budget {duration(self.budget)}): {later.problem}"
            )
            logger.warning("%s: giving up: %s", later.subject, reason)
            await delivery.dead_letter(reason)
            return
        pause = min(self.pause(attempts, retry_after(later.problem)), remaining)
        logger.warning(
            "%s not delivered (attempt %d), retrying in %.1fs: %s",
            later.subject, attempts, pause, later.problem,
        )  # fmt: skip
        # Pause before handing it back, so a flapping endpoint is not hammered. A shutdown
        # that cancels the pause leaves the original unacked: it goes back to the queue.
        await self.sleep(pause)
        try:
            await later.requeue(attempts, first)
        except BrokerUnavailable as unavailable:
            logger.warning("%s: cannot requeue it (%s); handing it back", later.subject,
                           unavailable)  # fmt: skip
            await delivery.retry()
            return
        await delivery.ack()  # only now: the copy is on the broker


def retry_after(problem: Exception) -> float | None:
    """The pause the error asks for (``retry_after`` seconds), if it names a usable one."""
    value = getattr(problem, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(float(value), 0.0)
    return None


def duration(seconds: float) -> str:
    """``seconds`` for people: ``42s``, ``15m00s``, ``2h05m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
