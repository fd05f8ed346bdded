"""Replies: a finished run's answer goes back where its signals came from.

The worker publishes one ``Reply`` per distinct ``reply_to`` of the signals a run handled,
confirmed, before it lets go of those signals; the reply dispatcher (worker role) consumes
``loom.replies`` and hands each reply to the adapter that serves its address.

Once: before sending, the dispatcher claims ``reply-sending:{key}:{digest}`` for a short
while (``LOOM_REPLIES__CLAIM_TTL``), so a second copy of a reply (``publish_reply``'s own
retry can make one) waits instead of posting it too; after sending it marks
``reply-sent:{key}:{digest}`` for a week, so a redelivery after a crash is acked unsent.
``key`` is the run id for a run's answer, and the run id and its approvals for a paused
run's request for decisions (``Reply.key``), so neither hides the other.

Retries run on a time budget, not on the broker's delivery limit: after a failed delivery
the dispatcher pauses (doubling from ``LOOM_REPLIES__RETRY_DELAY``, at least the error's
``retry_after``, at most ``LOOM_REPLIES__MAX_DELAY``), publishes a copy that counts the
attempt, confirmed, and only then acks the original. So a Slack outage or a long
Retry-After delays answers instead of losing them; a reply still failing
``LOOM_REPLIES__RETRY_BUDGET`` after its first failure is dead-lettered, saying how long
and how often it was tried. ``UndeliverableReply`` dead-letters at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Protocol, runtime_checkable

from loom import metrics
from loom.broker.base import Broker, BrokerUnavailable, Delivery, Message
from loom.daemon.settings import ReplySettings
from loom.delivery import RetryBudget, RetryLater, count_dead_letters
from loom.intake.adapter import Adapter
from loom.intake.replies import Reply, UndeliverableReply
from loom.runtime.run import RunResult
from loom.state.base import StateUnavailable
from loom.state.claims import Claims
from loom.state.leases import replica_id
from loom.wire import PendingSignal
from loom.wire.topology import REPLIES_EXCHANGE, REPLIES_QUEUE, REPLY_ROUTING_KEY

logger = logging.getLogger("loom.replies")

SENT_TTL = 7 * 86_400.0
"""Seconds a delivered reply is remembered, so redeliveries within it are not sent again."""
MARK_PATIENCE = 600.0
"""Seconds a reply sent during a state outage is tried to be marked as sent."""


def replies_for(result: RunResult, signals: Sequence[PendingSignal]) -> list[Reply]:
    """One reply per distinct ``reply_to`` among the signals the run was asked to handle."""
    by_address: dict[str, list[PendingSignal]] = {}
    for pending in signals:
        address = pending.signal.reply_to
        if address and pending.action.wakes_a_worker:
            by_address.setdefault(address, []).append(pending)
    return [
        Reply(
            reply_to=address,
            session_id=result.session_id,
            run_id=result.run_id,
            status=result.status.value,
            output=result.output,
            error=result.error,
            signal_ids=tuple(p.signal.id for p in asking),
            signal_source=asking[0].signal.source,
        )
        for address, asking in by_address.items()
    ]


async def publish_reply(broker: Broker, reply: Reply, *, attempts: int = 3) -> None:
    """Publish ``reply`` (confirmed); a broker hiccup is retried before giving up."""
    message = Message(body=reply.to_json(), message_id=f"{reply.key}:{_digest(reply)}")
    for attempt in range(1, attempts + 1):
        try:
            await broker.publish(REPLIES_EXCHANGE, REPLY_ROUTING_KEY, message)
            return
        except BrokerUnavailable:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.5 * attempt)


@runtime_checkable
class RecordsDeliveries(Protocol):
    """An adapter that keeps notes on what it delivered (Slack: the session a posted
    message answers), in the daemon's state, for ``ttl`` seconds (the session TTL)."""

    def use_state(self, state: Claims, *, ttl: float) -> None: ...


class ReplyInProgress(Exception):
    """Another copy of the reply is being sent right now: try again later."""


class ReplyDispatcher:
    """Consumes ``loom.replies`` and delivers each reply through the adapter for its address.

    ``clock`` (Unix time) and ``sleep`` are injectable, so tests run the retry budget
    without waiting.
    """

    def __init__(
        self,
        broker: Broker,
        state: Claims,
        adapters: Sequence[Adapter],
        *,
        settings: ReplySettings | None = None,
        session_ttl: float = 30 * 86_400.0,
        prefetch: int = 16,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        settings = settings or ReplySettings()
        self.broker = broker
        self.state = state
        self.adapters = list(adapters)
        self.prefetch = prefetch
        self.budget = RetryBudget(
            retry_delay=settings.retry_delay,
            budget=settings.retry_budget,
            max_delay=settings.max_delay,
            clock=clock,
            sleep=sleep,
        )
        """The retry budget: how long, and how often, a failing reply is tried."""
        self.claim_ttl = settings.claim_ttl
        self.id = replica_id()
        """Names this dispatcher in the claims it holds (each attempt adds its own suffix)."""
        self._tag: str | None = None
        self._marking: set[asyncio.Task[None]] = set()
        for adapter in self.adapters:
            if isinstance(adapter, RecordsDeliveries):
                adapter.use_state(state, ttl=session_ttl)

    @property
    def consuming(self) -> bool:
        return self._tag is not None

    async def start(self) -> None:
        handler = count_dead_letters(self.budget.wrap(self.handle))
        self._tag = await self.broker.consume(REPLIES_QUEUE, handler, prefetch=self.prefetch)

    async def stop(self, timeout: float) -> None:
        if self._tag is not None:
            tag, self._tag = self._tag, None
            await self.broker.cancel(tag, timeout=timeout)
        for task in list(self._marking):
            task.cancel()

    def adapter_for(self, address: str) -> Adapter | None:
        return next((a for a in self.adapters if a.replies_to(address)), None)

    def pause(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failure (see ``RetryBudget.pause``)."""
        return self.budget.pause(attempts, retry_after)

    async def handle(self, delivery: Delivery) -> None:
        """Deliver one reply; a failure worth another try raises ``RetryLater`` (for the
        retry budget ``start`` wraps this in)."""
        try:
            reply = Reply.from_json(delivery.body)
        except (ValueError, TypeError) as problem:
            await delivery.dead_letter(f"invalid reply: {problem}")
            return
        adapter = self.adapter_for(reply.reply_to)
        if adapter is None:
            metrics.REPLIES.labels(adapter="none", outcome="undeliverable").inc()
            reason = (
                f"no adapter delivers replies to {_scheme(reply.reply_to)!r} addresses "
                f"(run {reply.run_id}); configure the adapter, then replay the dead letters"
            )
            logger.warning("reply of run %s dead-lettered: %s", reply.run_id, reason)
            await delivery.dead_letter(reason)
            return
        # A run's answer and each of its requests for approval are replies of their own.
        key = f"{reply.key}:{_digest(reply)}"
        sent_key, sending_key = f"reply-sent:{key}", f"reply-sending:{key}"
        # Each attempt is its own owner, so two copies in one process also exclude each other.
        owner = f"{self.id}:{uuid.uuid4().hex[:8]}"
        try:
            sent = await self.state.claimed(sent_key) is not None
            holder = None if sent else await self.state.claim(sending_key, owner, self.claim_ttl)
        except StateUnavailable as problem:
            # Nothing was sent yet: back off as after a failed delivery, not straight back.
            raise self._retry_later(reply, adapter, problem) from problem
        if sent:
            await delivery.ack()  # delivered before a crash cut the ack short, or a copy
            return
        if holder is not None:
            busy = ReplyInProgress(f"another copy is being sent (held by {holder})")
            raise self._retry_later(reply, adapter, busy)
        try:
            await adapter.send_reply(reply)
        except UndeliverableReply as problem:
            await self._release(sending_key)
            metrics.REPLIES.labels(adapter=adapter.name, outcome="undeliverable").inc()
            logger.warning("reply of run %s cannot be delivered: %s", reply.run_id, problem)
            await delivery.dead_letter(f"{adapter.name} reply undeliverable: {problem}")
            return
        except Exception as problem:
            await self._release(sending_key)
            metrics.REPLIES.labels(adapter=adapter.name, outcome="error").inc()
            raise self._retry_later(reply, adapter, problem) from problem
        try:
            await self.state.claim(sent_key, reply.run_id, SENT_TTL)
        except Exception as problem:
            # The answer went out: handing it back would post it again. The sending claim
            # is kept (it expires after claim_ttl), so a redelivery within that window
            # still finds it held and does not post; meanwhile the mark is tried again in
            # the background (it is keyed: landing twice is harmless), so a later copy (a
            # worker that sent its outbox again after the same outage) finds it.
            logger.warning(
                "reply of run %s was sent but not marked as sent (%s); acking it anyway, "
                "marking it again in the background", reply.run_id, problem,
            )  # fmt: skip
            self._mark_later(sent_key, reply.run_id)
        metrics.REPLIES.labels(adapter=adapter.name, outcome="sent").inc()
        await delivery.ack()

    def _mark_later(self, sent_key: str, run_id: str) -> None:
        """Mark a sent reply as sent once the state answers again (pauses doubling from
        one second, for up to ``MARK_PATIENCE`` seconds)."""

        async def mark() -> None:
            pause, waited = 1.0, 0.0
            while waited < MARK_PATIENCE:
                await self.budget.sleep(pause)
                waited += pause
                try:
                    await self.state.claim(sent_key, run_id, SENT_TTL)
                    return
                except Exception as problem:
                    logger.info("reply of run %s still not marked as sent: %s", run_id, problem)
                pause = min(pause * 2, 30.0)
            logger.warning("reply of run %s: gave up marking it as sent", run_id)

        task = asyncio.create_task(mark(), name=f"loom-reply-mark-{run_id}")
        self._marking.add(task)
        task.add_done_callback(self._marking.discard)

    def _retry_later(self, reply: Reply, adapter: Adapter, problem: Exception) -> RetryLater:
        """The failure of this attempt, for the retry budget to pause and requeue (a copy
        of the reply that counts the attempt) or, past the budget, dead-letter."""

        def gave_up() -> None:
            metrics.REPLIES.labels(adapter=adapter.name, outcome="undeliverable").inc()

        return RetryLater(
            problem,
            attempts=reply.attempts,
            first_failed_at=reply.first_failed_at,
            requeue=partial(self._requeue, reply),
            subject=f"reply of run {reply.run_id} to {_scheme(reply.reply_to)}",
            what=f"{adapter.name} reply",
            gave_up=gave_up,
        )

    async def _requeue(self, reply: Reply, attempts: int, first_failed_at: float) -> None:
        again = dataclasses.replace(reply, attempts=attempts, first_failed_at=first_failed_at)
        await publish_reply(self.broker, again)

    async def _release(self, key: str) -> None:
        """Drop a sending claim after a failed send (a claim left behind just expires)."""
        try:
            await self.state.forget(key)
        except StateUnavailable as problem:
            logger.info("could not release %s (%s); it expires by itself", key, problem)


def _digest(reply: Reply) -> str:
    return hashlib.sha256(reply.reply_to.encode()).hexdigest()[:16]


def _scheme(address: str) -> str:
    return address.partition(":")[0]


__all__ = [
    "SENT_TTL",
    "RecordsDeliveries",
    "ReplyDispatcher",
    "ReplyInProgress",
    "publish_reply",
    "replies_for",
]
