"""The dead-letter queue on RabbitMQ: peeking and replaying.

``peek`` takes letters with ``basic.get`` and requeues them in the order taken, which keeps
the order on RabbitMQ 3.x and 4.x quorum queues (requeued messages are served first);
RabbitMQ applies requeues asynchronously, so a queue's depth may lag for a moment after.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import suppress
from datetime import datetime

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from loom.broker.base import ORIGIN_HEADER, REASON_HEADER, DeadLetter, Message
from loom.broker.rabbitmq.connection import ERRORS, Connection
from loom.broker.rabbitmq.consumer import DELIVERY_COUNT_HEADER
from loom.broker.rabbitmq.publisher import REPLAY_HEADER, Publisher, outgoing

_BROKER_HEADERS = (DELIVERY_COUNT_HEADER, "x-death", "x-first-death-exchange",
                   "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                   "x-last-death-queue", "x-last-death-reason")  # fmt: skip
_DEATH_REASONS = {"rejected": "rejected", "expired": "expired", "maxlen": "queue length limit"}


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class DeadLetters:
    """Reads the topology's dead-letter queue on the admin channel, one reader at a time."""

    def __init__(self, connection: Connection, publisher: Publisher, delivery_limit: int) -> None:
        self.connection = connection
        self.publisher = publisher
        self.topology = publisher.declarer.topology
        self.delivery_limit = delivery_limit
        self._lock = asyncio.Lock()

    async def peek(self, limit: int) -> list[DeadLetter]:
        taken: list[AbstractIncomingMessage] = []
        async with self._lock:
            queue = await self._queue()
            try:
                while len(taken) < limit:
                    incoming = await self._get(queue)
                    if incoming is None:
                        break
                    taken.append(incoming)
                return [self.letter(incoming) for incoming in taken]
            finally:
                await _requeue(taken)

    async def replay(self, limit: int | None, message_id: str | None = None) -> int:
        replayed = 0
        skipped: list[AbstractIncomingMessage] = []
        async with self._lock:
            queue = await self._queue()
            marker = uuid.uuid4().hex
            try:
                while limit is None or replayed < limit:
                    incoming = await self._get(queue)
                    if incoming is None:
                        break
                    if incoming.headers.get(REPLAY_HEADER) == marker:
                        skipped.append(incoming)  # came back already: the rest is newer
                        break
                    # Held (and requeued at the end) unless it is safely republished.
                    skipped.append(incoming)
                    letter = self.letter(incoming)
                    if letter.origin_queue not in self.topology.limited:
                        continue
                    if message_id is not None and letter.message.message_id != message_id:
                        continue
                    again = outgoing(letter.message)
                    again.headers[REPLAY_HEADER] = marker
                    target = self.connection.publisher().default_exchange
                    await self.publisher.send(
                        target, self.connection.name(letter.origin_queue), again
                    )
                    skipped.pop()
                    await self.connection.settle(incoming.ack(), "ack a replayed dead letter")
                    replayed += 1
            finally:
                await _requeue(skipped)
        return replayed

    def letter(self, incoming: AbstractIncomingMessage) -> DeadLetter:
        """A dead letter as the port shows it: Loom's and RabbitMQ's own headers taken off."""
        headers = dict(incoming.headers)
        reason = headers.get(REASON_HEADER)
        origin = headers.get(ORIGIN_HEADER)
        at = incoming.timestamp
        if reason is None:  # dead-lettered by RabbitMQ itself
            cause = _text(headers.get("x-first-death-reason", "unknown"))
            if cause == "delivery_limit":
                reason = f"delivery limit ({self.delivery_limit}) exceeded"
            else:
                reason = _DEATH_REASONS.get(cause, cause)
            deaths = headers.get("x-death")
            if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
                time = deaths[0].get("time")
                at = time if isinstance(time, datetime) else at
        if origin is None:
            origin = self.connection.logical(_text(headers.get("x-first-death-queue", "")))
        clean = {
            key: value
            for key, value in headers.items()
            if key not in (REASON_HEADER, ORIGIN_HEADER, REPLAY_HEADER, *_BROKER_HEADERS)
        }
        return DeadLetter(
            message=Message(incoming.body, clean, incoming.message_id),
            reason=_text(reason),
            origin_queue=_text(origin),
            dead_lettered_at=at,
        )

    async def _queue(self) -> AbstractQueue:
        name = self.connection.name(self.topology.dead_letter_queue)
        return await self.connection.admin().get_queue(name, ensure=False)

    async def _get(self, queue: AbstractQueue) -> AbstractIncomingMessage | None:
        try:
            return await queue.get(no_ack=False, fail=False, timeout=self.publisher.timeout)
        except ERRORS as exc:
            raise self.connection.unavailable("cannot read the dead-letter queue", exc) from exc


async def _requeue(messages: list[AbstractIncomingMessage]) -> None:
    for incoming in messages:
        # A failed nack is harmless: the broker requeues unacked messages when the channel
        # goes away.
        with suppress(Exception):
            await incoming.nack(requeue=True)
