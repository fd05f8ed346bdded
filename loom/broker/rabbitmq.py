"""The broker port on RabbitMQ (aio-pika): quorum queues, publisher confirms, manual acks.

- Publishing goes through one channel with publisher confirms and ``on_return_raises``;
  every message is persistent and ``mandatory``, so an unroutable one raises instead of
  vanishing, and ``publish`` returns only after the broker's ``Basic.Ack``.
- Work queues are quorum queues with ``x-delivery-limit`` and at-least-once dead-lettering
  to the fanout ``loom.dead``. ``delivery_limit`` is the most deliveries a message gets, so
  the queue argument is ``delivery_limit - 1`` (RabbitMQ counts *re*deliveries).
- ``Delivery.retry`` is ``basic.reject(requeue=True)``: since RabbitMQ 4.3 only a reject
  counts towards the limit (a nack does not); earlier versions count both.
- Each consumer has its own channel with ``basic.qos(prefetch)``; each delivery runs in its
  own task, so a slow handler holds one of the ``prefetch`` slots and blocks nothing else.
- ``namespace`` prefixes every exchange and queue name (``<namespace>.loom.work``), so
  deployments or test runs can share a broker; callers keep using the logical names.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelPreconditionFailed,
)
from pamqp.commands import Basic

from loom import metrics
from loom.broker.base import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEFAULT_DELIVERY_LIMIT,
    EXCHANGES,
    ORIGIN_HEADER,
    QUEUES,
    REASON_HEADER,
    TOPOLOGY,
    WORK_QUEUES,
    Broker,
    BrokerUnavailable,
    DeadLetter,
    Handler,
    Message,
    namespaced,
)
from loom.broker.rabbitmq_consumer import (
    DELIVERY_COUNT_HEADER,
    REPLAY_HEADER,
    RabbitConsumer,
)

log = logging.getLogger(__name__)

_BROKER_HEADERS = (DELIVERY_COUNT_HEADER, "x-death", "x-first-death-exchange",
                   "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                   "x-last-death-queue", "x-last-death-reason")  # fmt: skip
_DEATH_REASONS = {"rejected": "rejected", "expired": "expired", "maxlen": "queue length limit"}
_UNLIMITED = 2**31 - 1
"""The dead-letter queue's delivery limit: peeking requeues, which must never drop a letter
(RabbitMQ 4 gives quorum queues a default limit of 20)."""
_ERRORS = (TimeoutError, *CONNECTION_EXCEPTIONS)
_LOST = (ChannelInvalidStateError, ChannelClosed, AMQPConnectionError)
"""A publish that failed because the channel or connection went away (worth a retry)."""
_RETRY_PAUSE = 0.1


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RabbitMQBroker(Broker):
    """The broker port on RabbitMQ, through one robust (auto-reconnecting) connection.

    ``cancel(tag, timeout=...)`` sends ``basic.cancel`` at once, lets in-flight handlers
    settle for up to ``timeout`` seconds, then cancels the rest, nacks their messages back
    to the queue and closes the consumer's channel. ``dead_letters()`` peeks with
    ``basic.get`` and requeues in the order taken, which keeps the order on RabbitMQ 3.x
    and 4.x quorum queues (requeued messages are served first); RabbitMQ applies requeues
    asynchronously, so ``queue_depth`` may lag for a moment after a peek.
    """

    def __init__(
        self,
        url: str,
        *,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        namespace: str = "",
    ) -> None:
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an AMQP URL: {mask_url(url)!r} (expected amqp:// or amqps://)")
        if delivery_limit < 1:
            raise ValueError(f"delivery_limit must be at least 1, not {delivery_limit}")
        self.url = mask_url(url)
        self._url = url
        password = urlsplit(url).password or ""
        # Longest first, so the percent-decoded form never leaves part of the raw one behind.
        self._secrets = sorted({password, unquote(password)} - {""}, key=len, reverse=True)
        self.delivery_limit = delivery_limit
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.namespace = namespace
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._admin: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._consumers: dict[str, RabbitConsumer] = {}
        self._start_lock = asyncio.Lock()
        self._admin_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._connection is not None and not self._connection.is_closed:
                return
            try:
                connection = await aio_pika.connect_robust(
                    self._url,
                    timeout=self.connect_timeout,
                    client_properties={"connection_name": f"loom {self.namespace}".strip()},
                )
            except _ERRORS as exc:
                raise self._unavailable("cannot connect", exc) from exc
            try:
                await self._declare(connection)
            except BaseException:
                with suppress(Exception):
                    await connection.close()
                raise
            self._connection = connection

    async def _declare(self, connection: AbstractRobustConnection) -> None:
        """Declare exchanges, queues and bindings on the publisher channel, which is robust:
        aio-pika declares them again after a reconnect."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                publisher = await connection.channel(on_return_raises=True)
                admin = await connection.channel(publisher_confirms=False)
                exchanges: dict[str, AbstractExchange] = {}
                for binding in TOPOLOGY:
                    if binding.exchange not in exchanges:
                        exchanges[binding.exchange] = await publisher.declare_exchange(
                            self._name(binding.exchange), binding.exchange_type, durable=True
                        )
                    queue = await publisher.declare_queue(
                        self._name(binding.queue),
                        durable=True,
                        arguments=self._queue_arguments(binding.queue),
                    )
                    await queue.bind(exchanges[binding.exchange], binding.routing_key)
        except ChannelPreconditionFailed as exc:
            raise self._unavailable(
                "the existing topology differs from Loom's (delete the queues or use another "
                "namespace)",
                exc,
            ) from exc
        except _ERRORS as exc:
            raise self._unavailable("cannot declare the topology", exc) from exc
        self._publisher, self._admin, self._exchanges = publisher, admin, exchanges

    async def close(self) -> None:
        consumers = list(self._consumers.values())
        self._consumers.clear()
        for consumer in consumers:
            await consumer.stop(timeout=0)
        connection, self._connection = self._connection, None
        self._publisher = self._admin = None
        self._exchanges = {}
        if connection is not None:
            with suppress(Exception):
                await connection.close()

    async def ping(self) -> bool:
        if self._admin is None:
            return False
        try:
            async with asyncio.timeout(self.publish_timeout):
                channel = await self._admin.get_underlay_channel()
                await channel.exchange_declare(
                    self._name(EXCHANGES[0]), exchange_type="topic", passive=True
                )
        except Exception:
            return False
        return True

    @property
    def consuming(self) -> bool:
        connection = self._connection
        return (
            bool(self._consumers)
            and connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
        )

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, exchange: str, routing_key: str, message: Message) -> None:
        if exchange not in EXCHANGES:
            raise ValueError(f"unknown exchange {exchange!r}; known: {', '.join(EXCHANGES)}")
        self._channels()
        await self._publish(self._exchanges[exchange], routing_key, self._outgoing(message))

    async def _publish(
        self, exchange: AbstractExchange, routing_key: str, message: aio_pika.Message
    ) -> None:
        """Publish and wait for the broker's ack. While the robust connection recovers from a
        drop, wait for it (within ``publish_timeout``) and publish again: a copy may then
        arrive twice, which the dedupe keys absorb; a silent loss would be worse."""
        where = f"exchange {exchange.name!r} with routing key {routing_key!r}"
        publisher = self._channels()[1]
        try:
            async with asyncio.timeout(self.publish_timeout):
                while True:
                    if publisher.is_closed:
                        await publisher.ready()
                    try:
                        confirmation = await exchange.publish(message, routing_key, mandatory=True)
                        break
                    except _LOST as exc:
                        if self._publisher is not publisher:  # closed by us meanwhile
                            raise self._unavailable("the broker was closed", exc) from exc
                        log.warning("publish to %s interrupted (%s); retrying", where, exc)
                        await asyncio.sleep(_RETRY_PAUSE)
        except PublishError as exc:
            raise self._unavailable(
                f"unroutable: no queue took the message to {where}", exc
            ) from exc
        except DeliveryError as exc:
            raise self._unavailable(f"the broker refused the message to {where}", exc) from exc
        except TimeoutError as exc:
            raise self._unavailable(
                f"no confirmation within {self.publish_timeout}s for {where}", exc
            ) from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise self._unavailable(f"publish to {where} failed", exc) from exc
        if not isinstance(confirmation, Basic.Ack):
            raise self._unavailable(f"publish to {where} was not confirmed ({confirmation!r})")

    @staticmethod
    def _outgoing(message: Message, **properties: Any) -> aio_pika.Message:
        return aio_pika.Message(
            message.body,
            headers=dict(message.headers),
            message_id=message.message_id or uuid.uuid4().hex,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **properties,
        )

    async def dead_letter(self, message: Message, origin_queue: str, reason: str) -> None:
        self._check_queue(origin_queue)
        await self._publish_dead_letter(message, origin_queue, reason)
        metrics.DEAD_LETTERS.labels(origin_queue).inc()

    async def _publish_dead_letter(
        self, message: Message, queue: str, reason: str, replay_marker: object = None
    ) -> None:
        self._channels()
        headers = {**message.headers, REASON_HEADER: reason, ORIGIN_HEADER: queue}
        if replay_marker is not None:
            headers[REPLAY_HEADER] = replay_marker
        letter = Message(message.body, headers, message.message_id)
        outgoing = self._outgoing(letter, timestamp=datetime.now(UTC))
        await self._publish(self._exchanges[DEAD_LETTER_EXCHANGE], self._name(queue), outgoing)

    # -- consuming -------------------------------------------------------------------------

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16) -> str:
        self._check_queue(queue)
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        connection = self._channels()[0]
        tag = f"loom.{queue}.{uuid.uuid4().hex[:12]}"
        channel: AbstractRobustChannel | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=prefetch)
                amqp_queue = await channel.declare_queue(
                    self._name(queue), durable=True, arguments=self._queue_arguments(queue)
                )
                consumer = RabbitConsumer(self, queue, handler, channel, amqp_queue, tag)
                await amqp_queue.consume(consumer.on_message, consumer_tag=tag)
        except _ERRORS as exc:
            if channel is not None:
                with suppress(Exception):
                    await channel.close()
            raise self._unavailable(f"cannot consume {queue!r}", exc) from exc
        self._consumers[tag] = consumer
        return tag

    async def cancel(self, tag: str, *, timeout: float | None = None) -> None:
        consumer = self._consumers.pop(tag, None)
        if consumer is not None:
            await consumer.stop(timeout)

    # -- dead letters and inspection -------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        taken: list[AbstractIncomingMessage] = []
        async with self._admin_lock:
            queue = await self._dead_letter_queue()
            try:
                while len(taken) < limit:
                    incoming = await self._get(queue)
                    if incoming is None:
                        break
                    taken.append(incoming)
                return [self._to_dead_letter(incoming) for incoming in taken]
            finally:
                await self._requeue(taken)

    async def replay_dead_letters(self, limit: int | None = None) -> int:
        replayed = 0
        skipped: list[AbstractIncomingMessage] = []
        async with self._admin_lock:
            queue = await self._dead_letter_queue()
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
                    letter = self._to_dead_letter(incoming)
                    if letter.origin_queue not in WORK_QUEUES:
                        continue
                    outgoing = self._outgoing(letter.message)
                    outgoing.headers[REPLAY_HEADER] = marker
                    target = self._channels()[1].default_exchange
                    await self._publish(target, self._name(letter.origin_queue), outgoing)
                    skipped.pop()
                    await self._settle(incoming.ack(), "ack a replayed dead letter")
                    replayed += 1
            finally:
                await self._requeue(skipped)
        return replayed

    async def queue_depth(self, queue: str) -> int:
        self._check_queue(queue)
        admin = self._channels()[2]
        try:
            async with asyncio.timeout(self.publish_timeout):
                channel = await admin.get_underlay_channel()
                # Not admin.declare_queue(passive=True): aio-pika answers that from a cache.
                result = await channel.queue_declare(self._name(queue), passive=True)
        except _ERRORS as exc:
            raise self._unavailable(f"cannot read the depth of {queue!r}", exc) from exc
        return result.message_count or 0

    async def delete_topology(self) -> None:
        """Delete this namespace's queues and exchanges (test teardown). Needs a namespace."""
        if not self.namespace:
            raise ValueError("refusing to delete the un-namespaced production topology")
        admin = self._channels()[2]
        channel = await admin.get_underlay_channel()
        for queue in QUEUES:
            await channel.queue_delete(self._name(queue))
        for exchange in EXCHANGES:
            await channel.exchange_delete(self._name(exchange))

    # -- helpers ---------------------------------------------------------------------------

    def _name(self, logical: str) -> str:
        return namespaced(logical, self.namespace)

    def _logical(self, physical: str) -> str:
        prefix = namespaced("", self.namespace)
        return physical.removeprefix(prefix) if prefix else physical

    def _queue_arguments(self, queue: str) -> dict[str, Any]:
        if queue not in WORK_QUEUES:
            return {"x-queue-type": "quorum", "x-delivery-limit": _UNLIMITED}
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit - 1,
            "x-dead-letter-exchange": self._name(DEAD_LETTER_EXCHANGE),
            # At-least-once dead-lettering (RabbitMQ >= 3.10) needs reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def _check_queue(self, queue: str) -> None:
        if queue not in QUEUES:
            raise ValueError(f"unknown queue {queue!r}; known: {', '.join(QUEUES)}")

    def _channels(
        self,
    ) -> tuple[AbstractRobustConnection, AbstractRobustChannel, AbstractRobustChannel]:
        connection, publisher, admin = self._connection, self._publisher, self._admin
        if connection is None or publisher is None or admin is None or connection.is_closed:
            raise BrokerUnavailable(f"RabbitMQ broker {self.url} is not started (or closed)")
        return connection, publisher, admin

    async def _dead_letter_queue(self) -> aio_pika.abc.AbstractQueue:
        return await self._channels()[2].get_queue(self._name(DEAD_LETTER_QUEUE), ensure=False)

    async def _get(self, queue: aio_pika.abc.AbstractQueue) -> AbstractIncomingMessage | None:
        try:
            return await queue.get(no_ack=False, fail=False, timeout=self.publish_timeout)
        except _ERRORS as exc:
            raise self._unavailable("cannot read the dead-letter queue", exc) from exc

    async def _requeue(self, messages: list[AbstractIncomingMessage]) -> None:
        for incoming in messages:
            # A failed nack is harmless: the broker requeues unacked messages when the
            # channel goes away.
            with suppress(Exception):
                await incoming.nack(requeue=True)

    async def _settle(self, action: Awaitable[None], what: str) -> None:
        try:
            await action
        except _ERRORS as exc:
            raise self._unavailable(
                f"cannot {what}; the broker will deliver the message again", exc
            ) from exc

    def _to_dead_letter(self, incoming: AbstractIncomingMessage) -> DeadLetter:
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
            origin = self._logical(_text(headers.get("x-first-death-queue", "")))
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

    def _unavailable(self, what: str, exc: BaseException | None = None) -> BrokerUnavailable:
        detail = ""
        if exc is not None:
            detail = f": {type(exc).__name__}: {str(exc) or repr(exc)}"
            for secret in self._secrets:
                detail = detail.replace(secret, "***")
        return BrokerUnavailable(f"RabbitMQ at {self.url}: {what}{detail}")
