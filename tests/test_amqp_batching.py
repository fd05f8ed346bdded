"""Publishes in flight together share socket writes to RabbitMQ
(``loom.broker.rabbitmq.batching``), and each still gets its own answer from the broker: a
nacked or returned publish fails on its own, and a publish whose connection is lost before
the confirmation never returns as if confirmed.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest
from aio_pika.exceptions import DeliveryError
from aiormq import spec
from yarl import URL

from loom.broker import Binding, BrokerUnavailable, Message, Topology
from loom.broker.rabbitmq import RabbitMQBroker, batching
from loom.broker.rabbitmq.publisher import persistent
from loom.core.coalescing import CoalescingTransport
from tests.fakes.tcp_proxy import TcpProxy
from tests.services import require_rabbitmq

TOPOLOGY = Topology(
    bindings=(
        Binding("batch.jobs", "direct", "job", "batch.jobs"),
        Binding("batch.dead", "fanout", "", "batch.dead-letters"),
    ),
    dead_letter_exchange="batch.dead",
    dead_letter_queue="batch.dead-letters",
    limited=("batch.jobs",),
)


def test_aiormq_still_takes_the_parameters_batching_relies_on() -> None:
    """``wait`` is outside aiormq's abstract channel: this fails if aiormq drops it."""
    wait = inspect.signature(aiormq.Channel.basic_publish).parameters.get("wait")
    assert wait is not None
    assert wait.default is True
    factory = inspect.signature(aiormq.Connection).parameters.get("transport_factory")
    assert factory is not None


class Recorder:
    """A transport that counts the writes that reach it."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CountingFactory(batching.CoalescingTransportFactory):
    def __init__(self) -> None:
        self.recorders: list[Recorder] = []

    def wrap(self, transport: Any, loop: asyncio.AbstractEventLoop) -> Any:
        recorder = Recorder(transport)
        self.recorders.append(recorder)
        return super().wrap(cast(asyncio.Transport, recorder), loop)


@pytest.fixture
async def channel() -> AsyncIterator[tuple[aio_pika.abc.AbstractChannel, CountingFactory]]:
    url = require_rabbitmq()
    factory = CountingFactory()
    connection = batching.CoalescingRobustConnection(URL(url), transport_factory=factory)
    await connection.connect(timeout=10)
    try:
        yield await connection.channel(on_return_raises=True), factory
    finally:
        await connection.close()


async def _queue(
    channel: aio_pika.abc.AbstractChannel, arguments: dict[str, Any] | None = None
) -> tuple[str, aio_pika.abc.AbstractQueue]:
    name = f"loomtest-batch-{uuid.uuid4().hex[:12]}"
    exchange = await channel.declare_exchange(name, "direct", auto_delete=True)
    queue = await channel.declare_queue(name, auto_delete=True, arguments=arguments)
    await queue.bind(exchange, "job")
    return name, queue


def _properties(i: int) -> spec.Basic.Properties:
    return persistent(Message(f"job {i}".encode(), {}, f"m{i}"))


async def test_publishes_in_flight_together_go_out_in_few_writes(
    channel: tuple[aio_pika.abc.AbstractChannel, CountingFactory],
) -> None:
    """Before: one write per publish (40); now the frames of a step go out together."""
    amqp, factory = channel
    name, queue = await _queue(amqp)
    underlay = await amqp.get_underlay_channel()
    [recorder] = factory.recorders
    before = recorder.writes
    answers = await asyncio.gather(
        *(
            batching.publish(underlay, name, "job", b"x", _properties(i), timeout=10)
            for i in range(40)
        )
    )
    assert all(isinstance(answer, spec.Basic.Ack) for answer in answers)
    assert recorder.writes - before <= 10, recorder.writes - before
    held = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        held.append(str(message.message_id))
    assert sorted(held) == sorted(f"m{i}" for i in range(40))


async def test_each_publish_of_a_batch_gets_its_own_ack_or_nack(
    channel: tuple[aio_pika.abc.AbstractChannel, CountingFactory],
) -> None:
    """A queue that takes 5 messages and refuses the rest: 20 publishes in flight together
    get 5 acks and 15 nacks, each its own, and the queue holds exactly the acked ones."""
    amqp, _ = channel
    limit = {"x-max-length": 5, "x-overflow": "reject-publish"}
    name, queue = await _queue(amqp, limit)
    underlay = await amqp.get_underlay_channel()
    answers = await asyncio.gather(
        *(
            batching.publish(underlay, name, "job", b"x", _properties(i), timeout=10)
            for i in range(20)
        ),
        return_exceptions=True,
    )
    acked = [i for i, a in enumerate(answers) if isinstance(a, spec.Basic.Ack)]
    nacked = [i for i, a in enumerate(answers) if isinstance(a, DeliveryError)]
    assert len(acked) == 5, answers
    assert len(nacked) == 15, answers
    held = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        held.append(str(message.message_id))
    assert sorted(held) == sorted(f"m{i}" for i in acked)


async def _held(url: str, queue: str) -> list[str]:
    """The message ids in ``queue`` (taken off it)."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        amqp_queue = await channel.get_queue(queue, ensure=False)
        held = []
        while (message := await amqp_queue.get(no_ack=True, fail=False)) is not None:
            held.append(str(message.message_id))
        return held


async def test_an_unroutable_publish_in_a_batch_fails_alone(namespace: str) -> None:
    url = require_rabbitmq()
    broker = RabbitMQBroker(url, topology=TOPOLOGY, namespace=namespace)
    await broker.start()
    try:
        results = await asyncio.gather(
            *(
                broker.publish("batch.jobs", key, Message(b"x", {}, f"m{i}"))
                for i, key in enumerate(["nowhere", "job", "job", "job"] * 5)
            ),
            return_exceptions=True,
        )
    finally:
        await broker.close()
    failed = [i for i, r in enumerate(results) if isinstance(r, BrokerUnavailable)]
    assert failed == list(range(0, 20, 4)), results
    assert all("unroutable" in str(results[i]) for i in failed)
    held = await _held(url, f"{namespace}.batch.jobs")
    assert sorted(held) == sorted(f"m{i}" for i in range(20) if i % 4)


def _through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


@pytest.mark.timeout(60)
async def test_a_connection_lost_mid_batch_confirms_nothing_unconfirmed(namespace: str) -> None:
    """The connection drops while a batch waits for its confirmations: every publish either
    fails (``BrokerUnavailable``) or returned because the broker confirmed it (it is on the
    queue, possibly republished after the reconnect); none returns for a message the broker
    does not have."""
    url = require_rabbitmq()
    target = urlsplit(url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5672).start()
    broker = RabbitMQBroker(
        _through(proxy, url), topology=TOPOLOGY, namespace=namespace, publish_timeout=2
    )
    try:
        await broker.start()
        publishes = [
            asyncio.ensure_future(broker.publish("batch.jobs", "job", Message(b"x", {}, f"m{i}")))
            for i in range(30)
        ]
        for _ in range(3):  # queued and written, not yet confirmed through the proxy
            await asyncio.sleep(0)
        proxy.cut()
        results = await asyncio.gather(*publishes, return_exceptions=True)
    finally:
        await broker.close()
        await proxy.close()
    assert all(r is None or isinstance(r, BrokerUnavailable) for r in results), results
    confirmed = {f"m{i}" for i, r in enumerate(results) if r is None}
    assert len(confirmed) < 30  # the cut came before the batch's confirmations
    held = set(await _held(url, f"{namespace}.batch.jobs"))
    assert confirmed <= held


async def test_coalesced_writes_keep_their_order_around_eof_and_abort() -> None:
    class Inner:
        def __init__(self) -> None:
            self.events: list[Any] = []

        def write(self, data: bytes) -> None:
            self.events.append(data)

        def write_eof(self) -> None:
            self.events.append("eof")

        def abort(self) -> None:
            self.events.append("abort")

        def is_closing(self) -> bool:
            return False

        def get_write_buffer_size(self) -> int:
            return 7

    inner = Inner()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.writelines([b"a", bytearray(b"b")])
    assert transport.get_write_buffer_size() == 2 + 7  # what is held counts as buffered
    transport.write_eof()
    assert inner.events == [b"ab", "eof"]
    transport.write(b"dropped")
    transport.abort()
    await asyncio.sleep(0)
    assert inner.events == [b"ab", "eof", "abort"]


class SocketsKept(batching.CoalescingTransportFactory):
    """Keeps the sockets' transports it makes, to read their buffers."""

    def __init__(self) -> None:
        self.transports: list[asyncio.Transport] = []

    def wrap(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> Any:
        self.transports.append(transport)
        return super().wrap(transport, loop)

    def buffered(self) -> int:
        return sum(t.get_write_buffer_size() for t in self.transports if not t.is_closing())


@pytest.mark.timeout(60)
async def test_a_broker_that_stops_reading_holds_new_publishes_back(namespace: str) -> None:
    """RabbitMQ stops reading publishers' sockets under a memory or disk alarm. Publishes
    that come while it does must wait, not pile up in the socket's buffer (nothing waits for
    a write, so before, 30 waves of 100 publishes of 10 KB all went into it: 24 MB past what
    the kernel's buffers took, here) and land when the broker reads again, long after
    their callers were told they failed."""
    url = require_rabbitmq()
    target = urlsplit(url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5672).start()
    broker = RabbitMQBroker(
        _through(proxy, url), topology=TOPOLOGY, namespace=namespace, publish_timeout=3
    )
    body = b"x" * 10_000
    try:
        factory = broker._connection.transport_factory = SocketsKept()
        await broker.start()
        proxy.stall()
        publishes: list[asyncio.Future[None]] = []
        peak = 0
        for wave in range(30):
            publishes += [
                asyncio.ensure_future(
                    broker.publish("batch.jobs", "job", Message(body, {}, f"m{wave}-{i}"))
                )
                for i in range(100)
            ]
            await asyncio.sleep(0.05)  # each wave written (or held back) before the next
            peak = max(peak, factory.buffered())
        while not all(p.done() for p in publishes):
            peak = max(peak, factory.buffered())
            await asyncio.sleep(0.01)
        results = [p.exception() for p in publishes]
    finally:
        proxy.flow()
        await broker.close()
        await proxy.close()
    # The broker had (nearly) nothing: those not confirmed fail, none as if confirmed.
    assert all(r is None or isinstance(r, BrokerUnavailable) for r in results)
    assert sum(r is None for r in results) < 100
    # A wave or two (1 MB each) in the buffer past the high-water mark at most, against
    # about 20 MB when every publish went into it.
    assert peak < 10_000_000, peak
