"""Replies: a finished run's answer goes back where its signals came from.

The worker publishes one ``Reply`` per distinct ``reply_to`` of the signals a run handled,
confirmed, before it lets go of those signals; the reply dispatcher (worker role) consumes
``loom.replies`` and hands each reply to the adapter that serves its address. A delivery
that fails is retried with a growing pause and dead-lettered past the delivery limit, so a
Slack outage delays answers instead of losing them. A reply already delivered is marked in
state, so a redelivery after a crash does not post the answer twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence

from loom import metrics
from loom.adapters.base import Adapter, Reply, UndeliverableReply
from loom.broker.base import (
    DEFAULT_DELIVERY_LIMIT,
    REPLIES_EXCHANGE,
    REPLIES_QUEUE,
    REPLY_ROUTING_KEY,
    Broker,
    BrokerUnavailable,
    Delivery,
    Message,
)
from loom.daemon.signals_io import PendingSignal
from loom.runtime.run import RunResult
from loom.state.base import State

logger = logging.getLogger("loom.replies")

SENT_TTL = 7 * 86_400.0
"""Seconds a delivered reply is remembered, so redeliveries within it are not sent again."""


def replies_for(result: RunResult, signals: Sequence[PendingSignal]) -> list[Reply]:
    """One reply per distinct ``reply_to`` among the signals the run was asked to handle."""
    by_address: dict[str, list[PendingSignal]] = {}
    for pending in signals:
        address = pending.signal.reply_to
        if address and pending.action != "observe":
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
    message = Message(body=reply.to_json(), message_id=f"{reply.run_id}:{_digest(reply)}")
    for attempt in range(1, attempts + 1):
        try:
            await broker.publish(REPLIES_EXCHANGE, REPLY_ROUTING_KEY, message)
            return
        except BrokerUnavailable:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.5 * attempt)


class ReplyDispatcher:
    """Consumes ``loom.replies`` and delivers each reply through the adapter for its address."""

    def __init__(
        self,
        broker: Broker,
        state: State,
        adapters: Sequence[Adapter],
        *,
        prefetch: int = 16,
        retry_delay: float = 1.0,
    ) -> None:
        self.broker = broker
        self.state = state
        self.adapters = list(adapters)
        self.prefetch = prefetch
        self.retry_delay = retry_delay
        self._tag: str | None = None

    @property
    def consuming(self) -> bool:
        return self._tag is not None

    async def start(self) -> None:
        self._tag = await self.broker.consume(REPLIES_QUEUE, self.handle, prefetch=self.prefetch)

    async def stop(self, timeout: float) -> None:
        if self._tag is not None:
            tag, self._tag = self._tag, None
            await self.broker.cancel(tag, timeout=timeout)

    def adapter_for(self, address: str) -> Adapter | None:
        return next((a for a in self.adapters if a.replies_to(address)), None)

    async def handle(self, delivery: Delivery) -> None:
        try:
            reply = Reply.from_json(delivery.body)
        except (ValueError, TypeError) as problem:
            await delivery.dead_letter(f"invalid reply: {problem}")
            return
        adapter = self.adapter_for(reply.reply_to)
        if adapter is None:
            metrics.REPLIES.labels(adapter="none", outcome="undeliverable").inc()
            await delivery.dead_letter(
                f"no adapter delivers replies to {_scheme(reply.reply_to)!r} addresses "
                f"(run {reply.run_id}); configure the adapter, then replay the dead letters"
            )
            return
        sent_key = f"reply-sent:{reply.run_id}:{_digest(reply)}"
        if await self.state.claimed(sent_key):
            await delivery.ack()  # delivered before a crash cut the ack short
            return
        try:
            await adapter.send_reply(reply)
        except UndeliverableReply as problem:
            metrics.REPLIES.labels(adapter=adapter.name, outcome="undeliverable").inc()
            logger.warning("reply of run %s cannot be delivered: %s", reply.run_id, problem)
            await delivery.dead_letter(f"{adapter.name} reply undeliverable: {problem}")
            return
        except Exception as problem:
            metrics.REPLIES.labels(adapter=adapter.name, outcome="error").inc()
            last = delivery.delivery_count >= DEFAULT_DELIVERY_LIMIT
            logger.warning(
                "reply of run %s to %s failed (delivery %d%s): %s",
                reply.run_id, _scheme(reply.reply_to), delivery.delivery_count,
                ", giving up" if last else ", will retry", problem,
            )  # fmt: skip
            if last:
                await delivery.dead_letter(f"{adapter.name} reply failed: {problem}")
                return
            # Pause before handing it back, so a flapping endpoint is not hammered.
            await asyncio.sleep(self.retry_delay * 2 ** (delivery.delivery_count - 1))
            await delivery.retry()
            return
        await self.state.claim(sent_key, reply.run_id, SENT_TTL)
        metrics.REPLIES.labels(adapter=adapter.name, outcome="sent").inc()
        await delivery.ack()


def _digest(reply: Reply) -> str:
    return hashlib.sha256(reply.reply_to.encode()).hexdigest()[:16]


def _scheme(address: str) -> str:
    return address.partition(":")[0]


__all__ = ["SENT_TTL", "ReplyDispatcher", "publish_reply", "replies_for"]
