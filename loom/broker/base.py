"""The broker port: durable, confirmed publishing and acknowledged consumption.

The port names no exchange or queue of its own: a broker is handed a ``Topology`` (the
exchanges, queues and bindings, which queues dead-letter and have a delivery limit) and
declares (and routes by) whatever it is given. Loom's own topology lives in ``loom.wire``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loom.errors import LoomError

DEFAULT_DELIVERY_LIMIT = 5
"""A message is delivered at most this many times; failing the last one dead-letters it."""


@dataclass(frozen=True, slots=True)
class Binding:
    """One edge of the topology: ``exchange`` (of ``exchange_type``) routes to ``queue``."""

    exchange: str
    exchange_type: str
    routing_key: str
    queue: str


@dataclass(frozen=True, slots=True)
class Topology:
    """What a broker declares: ``bindings`` (every exchange and queue is in one), the
    dead-letter exchange and queue, and the ``limited`` queues, which enforce the delivery
    limit and dead-letter to ``dead_letter_exchange``."""

    bindings: tuple[Binding, ...]
    dead_letter_exchange: str
    dead_letter_queue: str
    limited: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = {self.dead_letter_exchange} - set(self.exchanges)
        unknown |= {self.dead_letter_queue, *self.limited} - set(self.queues)
        if unknown:
            raise ValueError(f"not bound in the topology: {', '.join(sorted(unknown))}")

    @property
    def exchanges(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(binding.exchange for binding in self.bindings))

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(binding.queue for binding in self.bindings))

    def check_queue(self, queue: str) -> None:
        """Raise ``ValueError`` unless ``queue`` is one of the topology's."""
        if queue not in self.queues:
            raise ValueError(f"unknown queue {queue!r}; known: {', '.join(self.queues)}")


def namespaced(name: str, namespace: str) -> str:
    """The broker-side name of exchange or queue ``name`` under ``namespace`` ("" = none).

    A namespace isolates several Loom deployments (or test runs) on one broker; callers keep
    using the logical names above.
    """
    return f"{namespace}.{name}" if namespace else name


REASON_HEADER = "x-loom-reason"
"""Why a message was dead-lettered (set by ``Delivery.dead_letter``)."""
ORIGIN_HEADER = "x-loom-origin"
"""The queue a dead letter came from, so ``replay`` can send it back."""


async def finish_handlers(tasks: set[asyncio.Task[None]], timeout: float | None) -> None:
    """Give the handlers under way ``timeout`` seconds (None: as long as they take) to
    finish, then cancel the rest and wait for them to end: what a consumer's ``cancel``
    does once no new delivery can start."""
    try:
        if tasks and (timeout is None or timeout > 0):
            await asyncio.wait(set(tasks), timeout=timeout)
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class BrokerUnavailable(LoomError):
    """The broker could not be reached or did not confirm a publish."""


@dataclass(slots=True)
class Message:
    """A message as published: body bytes, headers, and an id for tracing and dedupe."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None


class Delivery(ABC):
    """One delivered message. The handler settles it exactly once: ack, retry or dead_letter.

    A handler that raises without settling gets ``retry()``; past the queue's delivery limit
    the broker dead-letters the message. One that returns without settling gets ``ack()``.
    Settling twice raises ``RuntimeError``. Brokers do not count dead letters: the
    ``loom.delivery.dead_letters`` wrapper does, from ``final``.
    """

    def __init__(
        self, message: Message, queue: str, delivery_count: int, *, final: bool = False
    ) -> None:
        self.message = message
        self.queue = queue
        self.delivery_count = delivery_count
        """1 on first delivery, 2 on the first redelivery, and so on."""
        self.final = final
        """True when ``retry()`` dead-letters this delivery instead (the delivery limit)."""
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def headers(self) -> dict[str, Any]:
        return self.message.headers

    @abstractmethod
    async def ack(self) -> None:
        """Done: remove the message."""

    @abstractmethod
    async def retry(self) -> None:
        """Put it back for another delivery (counts towards the delivery limit)."""

    @abstractmethod
    async def dead_letter(self, reason: str) -> None:
        """Move it to the dead-letter queue with ``reason`` (confirmed), then ack it."""


Handler = Callable[[Delivery], Awaitable[None]]


@dataclass(slots=True)
class DeadLetter:
    """A message in the dead-letter queue."""

    message: Message
    reason: str
    origin_queue: str
    dead_lettered_at: datetime | None = None


class Broker(ABC):
    """Port to RabbitMQ (or the in-process memory broker), on the topology it was handed."""

    url: str = ""
    topology: Topology

    @abstractmethod
    async def start(self) -> None:
        """Connect and declare the topology (idempotent). Raise BrokerUnavailable."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consumers and disconnect."""

    @abstractmethod
    async def publish(self, exchange: str, routing_key: str, message: Message) -> None:
        """Publish persistently; return only once the broker confirmed it.

        Raise ``BrokerUnavailable`` when it is not confirmed: the caller must not report
        the message as accepted.
        """

    @abstractmethod
    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16) -> str:
        """Start delivering ``queue`` to ``handler``; returns a tag for ``cancel``."""

    @abstractmethod
    async def cancel(self, tag: str, *, timeout: float | None = None) -> None:
        """Stop a consumer: no new deliveries; unsettled ones go back to the queue.

        In-flight handlers may finish and settle normally for up to ``timeout`` seconds
        (``None``: as long as they take); those still running then are cancelled and their
        messages go back to the queue.
        """

    @abstractmethod
    async def dead_letter(self, message: Message, origin_queue: str, reason: str) -> None:
        """Put ``message`` in the dead-letter queue (confirmed) as if it had died in
        ``origin_queue`` (where ``replay_dead_letters`` sends it back) because of
        ``reason``. For work that failed after its delivery was settled."""

    @abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Peek at dead letters, oldest first, without removing them."""

    @abstractmethod
    async def replay_dead_letters(
        self, limit: int | None = None, *, message_id: str | None = None
    ) -> int:
        """Republish dead letters to the queue they came from; returns how many.
        ``message_id``: only the letters with that message id."""

    @abstractmethod
    async def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (not counting unacknowledged ones)."""

    @abstractmethod
    async def queue_consumers(self, queue: str) -> int:
        """Consumers attached to ``queue``: across replicas, the live processes of the role
        that consumes it."""

    async def ping(self) -> bool:
        """True when the broker answers."""
        return True

    @property
    def consuming(self) -> bool:
        """True while at least one consumer is active."""
        return False


MOVED_TO_WIRE = frozenset(
    {"SIGNALS_EXCHANGE", "ATTENTION_QUEUE", "WORK_EXCHANGE", "WORK_QUEUE", "WORK_ROUTING_KEY",
     "REPLIES_EXCHANGE", "REPLIES_QUEUE", "REPLY_ROUTING_KEY", "DEAD_LETTER_EXCHANGE",
     "DEAD_LETTER_QUEUE", "TOPOLOGY", "EXCHANGES", "QUEUES", "WORK_QUEUES"}
)  # fmt: skip
"""Loom's own exchange and queue names, which this module held before the broker was
handed its topology: importing one from here says where it went."""


def moved_to_wire(module: str, name: str) -> ImportError:
    return ImportError(
        f"{name} is Loom's topology, no longer the broker's: import it from loom.wire "
        f"(from loom.wire import {name}), not from {module}"
    )


def __getattr__(name: str) -> Any:
    if name in MOVED_TO_WIRE:
        raise moved_to_wire(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
