"""The in-process broker: the port's full semantics in memory, for ``loom run`` and tests.

Not a mock: it routes by the topology it is given, as RabbitMQ does (topic, direct and
fanout bindings), counts deliveries, retries, dead-letters past the delivery limit, honours
``prefetch`` and hands unsettled messages back on ``cancel``. ``join()`` waits until the
queues are drained, so tests need no sleeps (like Dramatiq's StubBroker and arq's burst
mode).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loom.broker.base import (
    DEFAULT_DELIVERY_LIMIT,
    ORIGIN_HEADER,
    REASON_HEADER,
    Binding,
    Broker,
    BrokerUnavailable,
    DeadLetter,
    Delivery,
    Handler,
    Message,
    Topology,
    finish_handlers,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Envelope:
    message: Message
    deliveries: int = 0
    enqueued_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class _Queue:
    """Ready messages in order, plus a count of the delivered but unsettled ones."""

    def __init__(self, name: str, changed: Callable[[], None]) -> None:
        self.name = name
        self.ready: deque[_Envelope] = deque()
        self.unsettled = 0
        self._available = asyncio.Event()
        self._changed = changed

    def put(self, envelope: _Envelope, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(envelope)
        else:
            self.ready.append(envelope)
        self._available.set()
        self._changed()

    async def get(self) -> _Envelope:
        while not self.ready:
            self._available.clear()
            await self._available.wait()
        # Taking the message and counting it unsettled happen without a suspension point, so
        # a cancelled getter never loses one.
        self.unsettled += 1
        return self.ready.popleft()

    @property
    def idle(self) -> bool:
        return not self.ready and self.unsettled == 0


class _MemoryDelivery(Delivery):
    def __init__(
        self,
        broker: MemoryBroker,
        queue: _Queue,
        envelope: _Envelope,
        on_settle: Callable[[], None],
    ) -> None:
        original = envelope.message
        message = Message(original.body, copy.deepcopy(original.headers), original.message_id)
        # Like RabbitMQ: only the limited queues have a delivery limit (and dead-letter).
        final = envelope.deliveries >= broker.delivery_limit and broker.limits(queue.name)
        super().__init__(message, queue.name, envelope.deliveries, final=final)
        self._broker = broker
        self._queue = queue
        self._envelope = envelope
        self._on_settle = on_settle

    async def ack(self) -> None:
        self._settle()

    async def retry(self) -> None:
        self._settle()
        if self.final:
            limit = self._broker.delivery_limit
            self._broker.bury(self._envelope, self.queue, f"delivery limit ({limit}) exceeded")
        else:
            self._queue.put(self._envelope, front=True)

    async def dead_letter(self, reason: str) -> None:
        self._settle()
        self._broker.bury(self._envelope, self.queue, reason)

    def hand_back(self) -> None:
        """Return an unsettled message to the front of its queue (its consumer stopped)."""
        if not self.settled:
            self._settle()
            self._queue.put(self._envelope, front=True)

    def _settle(self) -> None:
        if self.settled:
            raise RuntimeError(f"delivery from {self.queue!r} is already settled")
        self._settled = True
        self._queue.unsettled -= 1
        self._on_settle()
        self._broker.notify()


class _Consumer:
    """Pulls from one queue while fewer than ``prefetch`` deliveries are unsettled."""

    def __init__(self, broker: MemoryBroker, queue: _Queue, handler: Handler, prefetch: int):
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._slots = asyncio.Semaphore(prefetch)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump = asyncio.create_task(self._run(), name=f"loom-memory-consumer:{queue.name}")

    @property
    def queue(self) -> _Queue:
        return self._queue

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                envelope = await self._queue.get()
            except BaseException:
                self._slots.release()
                raise
            envelope.deliveries += 1
            delivery = _MemoryDelivery(self._broker, self._queue, envelope, self._slots.release)
            task = asyncio.create_task(self._handle(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, delivery: _MemoryDelivery) -> None:
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            delivery.hand_back()
            raise
        except Exception:
            log.exception(
                "handler for %s failed (delivery %d)", delivery.queue, delivery.delivery_count
            )
            if not delivery.settled:
                await delivery.retry()
        else:
            if not delivery.settled:
                await delivery.ack()

    async def stop(self, timeout: float | None) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)
        await finish_handlers(self._tasks, timeout)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _match(rest, words[1:])


def _routes(binding: Binding, routing_key: str) -> bool:
    if binding.exchange_type == "fanout":
        return True
    if binding.exchange_type == "topic":
        return topic_matches(binding.routing_key, routing_key)
    return binding.routing_key == routing_key


def _without(headers: dict[str, object], names: Iterable[str]) -> dict[str, object]:
    drop = set(names)
    return {key: value for key, value in headers.items() if key not in drop}


class MemoryBroker(Broker):
    """The broker port in one process. Messages survive ``close()``/``start()``, not the process.

    ``cancel(tag)`` stops new deliveries at once; in-flight handlers finish and settle
    normally (up to ``timeout``); those still running are cancelled and their messages go
    back to the front of the queue. ``namespace`` is accepted for symmetry with
    ``RabbitMQBroker``; one process needs no isolation.
    """

    url = "memory://"

    def __init__(
        self,
        *,
        topology: Topology,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        namespace: str = "",
    ) -> None:
        if delivery_limit < 1:
            raise ValueError(f"delivery_limit must be at least 1, not {delivery_limit}")
        self.topology = topology
        self.delivery_limit = delivery_limit
        self.namespace = namespace
        self._changed = asyncio.Event()
        self._queues = {name: _Queue(name, self.notify) for name in topology.queues}
        self._consumers: dict[str, _Consumer] = {}
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        consumers = list(self._consumers.values())
        self._consumers.clear()
        for consumer in consumers:
            await consumer.stop(timeout=0)
        self._closed = True

    async def publish(self, exchange: str, routing_key: str, message: Message) -> None:
        self._check_open()
        bindings = [binding for binding in self.topology.bindings if binding.exchange == exchange]
        if not bindings:
            raise ValueError(f"unknown exchange {exchange!r}")
        targets = [binding.queue for binding in bindings if _routes(binding, routing_key)]
        if not targets:
            raise BrokerUnavailable(
                f"unroutable: no queue is bound to exchange {exchange!r} "
                f"for routing key {routing_key!r}"
            )
        message_id = message.message_id or uuid.uuid4().hex
        for name in targets:
            copied = Message(message.body, copy.deepcopy(message.headers), message_id)
            self._queues[name].put(_Envelope(copied))

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16) -> str:
        self._check_open()
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        tag = f"memory.{queue}.{uuid.uuid4().hex[:12]}"
        self._consumers[tag] = _Consumer(self, self._queue(queue), handler, prefetch)
        return tag

    async def cancel(self, tag: str, *, timeout: float | None = None) -> None:
        consumer = self._consumers.pop(tag, None)
        if consumer is not None:
            await consumer.stop(timeout)

    async def dead_letter(self, message: Message, origin_queue: str, reason: str) -> None:
        self._check_open()
        self._queue(origin_queue)
        self.bury(_Envelope(message), origin_queue, reason)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        ready = list(self._queues[self.topology.dead_letter_queue].ready)[: max(limit, 0)]
        return [_to_dead_letter(envelope) for envelope in ready]

    async def replay_dead_letters(
        self, limit: int | None = None, *, message_id: str | None = None
    ) -> int:
        self._check_open()
        dead = self._queues[self.topology.dead_letter_queue]
        kept: deque[_Envelope] = deque()
        replayed = 0
        while dead.ready:
            envelope = dead.ready.popleft()
            origin = envelope.message.headers.get(ORIGIN_HEADER)
            chosen = message_id is None or envelope.message.message_id == message_id
            if (limit is not None and replayed >= limit) or not self.limits(origin) or not chosen:
                kept.append(envelope)
                continue
            letter = _to_dead_letter(envelope)
            self._queues[letter.origin_queue].put(_Envelope(letter.message))
            replayed += 1
        dead.ready = kept
        self.notify()
        return replayed

    async def queue_depth(self, queue: str) -> int:
        return len(self._queue(queue).ready)

    async def queue_consumers(self, queue: str) -> int:
        target = self._queue(queue)
        return sum(1 for consumer in self._consumers.values() if consumer.queue is target)

    async def ping(self) -> bool:
        return not self._closed

    @property
    def consuming(self) -> bool:
        return bool(self._consumers) and not self._closed

    async def join(self, queue: str | None = None, *, timeout: float | None = None) -> None:
        """Wait until ``queue`` (default: every limited queue) is drained.

        Drained means no message ready and none delivered but unsettled. Raises
        ``TimeoutError`` after ``timeout`` seconds (e.g. when nothing consumes).
        """
        limited = self.topology.limited
        queues = [self._queue(queue)] if queue else [self._queues[name] for name in limited]
        async with asyncio.timeout(timeout):
            while not all(q.idle for q in queues):
                self._changed.clear()
                await self._changed.wait()

    def _queue(self, name: str) -> _Queue:
        self.topology.check_queue(name)
        return self._queues[name]

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the memory broker is closed")

    def notify(self) -> None:
        """Wake ``join()``: a queue changed."""
        self._changed.set()

    def limits(self, queue: object) -> bool:
        """True for a queue with a delivery limit, which dead-letters."""
        return queue in self.topology.limited

    def bury(self, envelope: _Envelope, origin: str, reason: str) -> None:
        """Move a message to the dead letters: a handler's ``dead_letter`` or past the limit."""
        headers = copy.deepcopy(envelope.message.headers)
        headers[REASON_HEADER] = reason
        headers[ORIGIN_HEADER] = origin
        message = Message(envelope.message.body, headers, envelope.message.message_id)
        self._queues[self.topology.dead_letter_queue].put(_Envelope(message))


def _to_dead_letter(envelope: _Envelope) -> DeadLetter:
    message = envelope.message
    headers = message.headers
    return DeadLetter(
        message=Message(
            message.body,
            copy.deepcopy(_without(headers, (REASON_HEADER, ORIGIN_HEADER))),
            message.message_id,
        ),
        reason=str(headers.get(REASON_HEADER, "unknown")),
        origin_queue=str(headers.get(ORIGIN_HEADER, "")),
        dead_lettered_at=envelope.enqueued_at,
    )
