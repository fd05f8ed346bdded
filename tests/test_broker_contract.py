"""The broker port's contract, run against the memory broker and a real RabbitMQ.

The brokers are handed a topology of the tests' own (not Loom's): they declare and route by
whatever they are given. Every RabbitMQ test gets a namespace of its own
(``RabbitMQBroker(namespace=...)``) whose queues and exchanges are deleted afterwards, so
runs never see each other's messages.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from loom.broker import (
    Binding,
    Broker,
    BrokerUnavailable,
    Delivery,
    MemoryBroker,
    Message,
    Topology,
)
from loom.delivery import count_dead_letters, dead_letter
from loom.wire import broker_from_url
from tests import polling
from tests.services import require_rabbitmq

SIGNALS_EXCHANGE = "contract.events"
ATTENTION_QUEUE = "contract.inbox"
WORK_EXCHANGE = "contract.jobs"
WORK_QUEUE = "contract.jobs"
WORK_ROUTING_KEY = "job"
DEAD_LETTER_EXCHANGE = "contract.dead"
DEAD_LETTER_QUEUE = "contract.dead-letters"
TOPOLOGY = Topology(
    bindings=(
        Binding(SIGNALS_EXCHANGE, "topic", "#", ATTENTION_QUEUE),
        Binding(WORK_EXCHANGE, "direct", WORK_ROUTING_KEY, WORK_QUEUE),
        Binding(DEAD_LETTER_EXCHANGE, "fanout", "", DEAD_LETTER_QUEUE),
    ),
    dead_letter_exchange=DEAD_LETTER_EXCHANGE,
    dead_letter_queue=DEAD_LETTER_QUEUE,
    limited=(ATTENTION_QUEUE, WORK_QUEUE),
)
"""The tests' own topology: a topic, a direct and a dead-letter exchange."""
LIMIT = 3  # delivery limit used by every broker here
WAIT = 10.0  # upper bound for anything to arrive; tests finish as soon as it does


class Backend:
    """Makes brokers of one kind. ``peer()`` is another broker on the same data, as a second
    replica sees it (for memory: the same object, one process shares one broker)."""

    def __init__(self, kind: str, url: str = "", namespace: str = "") -> None:
        self.kind, self.url, self.namespace = kind, url, namespace
        self.brokers: list[Broker] = []
        self._memory: MemoryBroker | None = None

    async def peer(self) -> Broker:
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemoryBroker(topology=TOPOLOGY, delivery_limit=LIMIT)
                self.brokers.append(self._memory)
            await self._memory.start()
            return self._memory
        from loom.broker.rabbitmq import RabbitMQBroker

        broker = RabbitMQBroker(
            self.url,
            topology=TOPOLOGY,
            delivery_limit=LIMIT,
            namespace=self.namespace,
            connect_timeout=5,
        )
        self.brokers.append(broker)
        await broker.start()
        return broker

    async def close(self) -> None:
        for broker in self.brokers:
            await broker.close()
        if self.kind == "rabbitmq":
            from loom.broker.rabbitmq import RabbitMQBroker

            cleaner = RabbitMQBroker(
                self.url, topology=TOPOLOGY, delivery_limit=LIMIT, namespace=self.namespace
            )
            await cleaner.start()
            try:
                await cleaner.delete_topology()
            finally:
                await cleaner.close()


@pytest.fixture(params=["memory", "rabbitmq"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        made = Backend("memory")
    else:
        made = Backend("rabbitmq", require_rabbitmq(), f"loomtest-{uuid.uuid4().hex[:12]}")
    yield made
    await made.close()


@pytest.fixture
async def broker(backend: Backend) -> Broker:
    return await backend.peer()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """RabbitMQ dead-letters and counts asynchronously: wait up to WAIT seconds."""
    await polling.eventually(check, what, timeout=WAIT)


class Inbox:
    """A handler that records deliveries; ``behave`` decides how each is settled."""

    def __init__(self, behave: Callable[[Delivery], Awaitable[None]] | None = None) -> None:
        self.deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self.behave = behave

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.put_nowait(delivery)
        if self.behave is not None:
            await self.behave(delivery)
        else:
            await delivery.ack()

    async def next(self) -> Delivery:
        return await asyncio.wait_for(self.deliveries.get(), WAIT)


def work(body: bytes, **headers: object) -> Message:
    return Message(body, dict(headers), message_id=f"id-{body.decode()}")


async def send(broker: Broker, *bodies: bytes) -> None:
    for body in bodies:
        await broker.publish(WORK_EXCHANGE, WORK_ROUTING_KEY, work(body))


# -- publish and consume ----------------------------------------------------------------------


async def test_roundtrip_keeps_body_headers_and_message_id(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(ATTENTION_QUEUE, inbox)
    message = Message(b'{"summary": "disk full"}', {"source": "cron", "n": 3}, "sig-1")
    await broker.publish(SIGNALS_EXCHANGE, "signal.cron", message)

    got = await inbox.next()
    assert got.body == b'{"summary": "disk full"}'
    assert got.headers == {"source": "cron", "n": 3}
    assert got.message.message_id == "sig-1"
    assert got.queue == ATTENTION_QUEUE
    assert got.delivery_count == 1
    assert got.settled
    await eventually(lambda: _depth_is(broker, ATTENTION_QUEUE, 0), "the ack")


async def test_routing_follows_the_topology(broker: Broker) -> None:
    await broker.publish(WORK_EXCHANGE, WORK_ROUTING_KEY, work(b"w"))
    await broker.publish(SIGNALS_EXCHANGE, "any.routing.key", work(b"s"))
    await eventually(lambda: _depth_is(broker, WORK_QUEUE, 1), "the work notice")
    await eventually(lambda: _depth_is(broker, ATTENTION_QUEUE, 1), "the signal")
    inbox = Inbox()
    await broker.consume(WORK_QUEUE, inbox)
    assert (await inbox.next()).body == b"w"


async def test_a_message_without_id_gets_one(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(WORK_QUEUE, inbox)
    await broker.publish(WORK_EXCHANGE, WORK_ROUTING_KEY, Message(b"anonymous"))
    assert (await inbox.next()).message.message_id


async def test_publish_is_confirmed_before_it_returns(backend: Backend) -> None:
    publisher = await backend.peer()
    await send(publisher, b"1", b"2", b"3")
    await publisher.close()  # nothing may be left in a client buffer

    consumer = await backend.peer()
    inbox = Inbox()
    await consumer.consume(WORK_QUEUE, inbox)
    bodies = [(await inbox.next()).body for _ in range(3)]
    assert sorted(bodies) == [b"1", b"2", b"3"]


async def test_handler_returning_without_settling_acks(broker: Broker) -> None:
    async def forget(delivery: Delivery) -> None:
        return None

    inbox = Inbox(forget)
    await broker.consume(WORK_QUEUE, inbox)
    await send(broker, b"x")
    await inbox.next()
    await eventually(lambda: _depth_is(broker, WORK_QUEUE, 0), "the implicit ack")
    assert inbox.deliveries.empty()


async def test_settling_twice_is_an_error(broker: Broker) -> None:
    errors: list[BaseException] = []

    async def twice(delivery: Delivery) -> None:
        await delivery.ack()
        try:
            await delivery.ack()
        except RuntimeError as exc:
            errors.append(exc)

    inbox = Inbox(twice)
    await broker.consume(WORK_QUEUE, inbox)
    await send(broker, b"x")
    await inbox.next()
    await eventually(lambda: _true(bool(errors)), "the second ack to fail")
    assert "already settled" in str(errors[0])


# -- retry, delivery limit, dead letters ---------------------------------------------------


async def test_retry_redelivers_with_a_higher_delivery_count(broker: Broker) -> None:
    async def retry_first(delivery: Delivery) -> None:
        if delivery.delivery_count == 1:
            await delivery.retry()
        else:
            await delivery.ack()

    inbox = Inbox(retry_first)
    await broker.consume(WORK_QUEUE, inbox)
    await broker.publish(WORK_EXCHANGE, WORK_ROUTING_KEY, work(b"again", attempt="x"))

    first, second = await inbox.next(), await inbox.next()
    assert (first.delivery_count, second.delivery_count) == (1, 2)
    assert second.message.message_id == "id-again"
    assert second.headers == {"attempt": "x"}


async def test_a_poison_message_ends_in_dead_letters_and_consumption_goes_on(
    broker: Broker,
) -> None:
    counts: list[int] = []
    good: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        if delivery.body == b"poison":
            counts.append(delivery.delivery_count)
            raise ValueError("cannot handle this")
        good.append(delivery.body)
        await delivery.ack()

    await broker.consume(WORK_QUEUE, handle, prefetch=1)
    await send(broker, b"poison", b"good-1")

    async def dead_lettered() -> bool:
        return len(await broker.dead_letters()) == 1

    await eventually(dead_lettered, "the poison message in the dead-letter queue")
    [letter] = await broker.dead_letters()
    assert letter.message.body == b"poison"
    assert letter.message.message_id == "id-poison"
    assert letter.origin_queue == WORK_QUEUE
    assert letter.reason == f"delivery limit ({LIMIT}) exceeded"
    assert counts == [1, 2, 3]

    await send(broker, b"good-2")
    await eventually(lambda: _true(good == [b"good-1", b"good-2"]), "the later messages")
    assert counts == [1, 2, 3]


def _dead_letters_counted(queue: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("loom_dead_letters_total", {"queue": queue}) or 0.0


async def test_every_dead_letter_is_counted_once_by_the_broker(broker: Broker) -> None:
    """loom_dead_letters_total{queue}: a handler's dead_letter and the broker's own
    dead-lettering past the delivery limit (which RabbitMQ does where Loom cannot see it),
    counted by the ``count_dead_letters`` wrapper from the deliveries the broker makes."""
    work_before = _dead_letters_counted(WORK_QUEUE)
    attention_before = _dead_letters_counted(ATTENTION_QUEUE)

    async def handle_work(delivery: Delivery) -> None:
        if delivery.body == b"poison":
            raise ValueError("cannot handle this")
        await delivery.ack()

    async def reject(delivery: Delivery) -> None:
        await delivery.dead_letter("not a signal")

    await broker.consume(WORK_QUEUE, count_dead_letters(handle_work), prefetch=1)
    await broker.consume(ATTENTION_QUEUE, count_dead_letters(Inbox(reject)))
    await send(broker, b"poison", b"good")
    await broker.publish(SIGNALS_EXCHANGE, "signal", Message(b"junk", message_id="id-junk"))

    async def both() -> bool:
        return len(await broker.dead_letters()) == 2

    await eventually(both, "two dead letters")
    await eventually(
        lambda: _true(_dead_letters_counted(WORK_QUEUE) - work_before == 1), "the count"
    )
    assert _dead_letters_counted(ATTENTION_QUEUE) - attention_before == 1
    await asyncio.sleep(0.1)  # nothing else is counted later
    assert _dead_letters_counted(WORK_QUEUE) - work_before == 1
    assert _dead_letters_counted(ATTENTION_QUEUE) - attention_before == 1


async def test_explicit_dead_letter_keeps_reason_origin_and_message(broker: Broker) -> None:
    async def reject(delivery: Delivery) -> None:
        await delivery.dead_letter(f"bad payload {delivery.body.decode()}")

    await broker.consume(ATTENTION_QUEUE, Inbox(reject))
    for body in (b"a", b"b"):
        message = Message(body, {"source": "test"}, message_id=f"id-{body.decode()}")
        await broker.publish(SIGNALS_EXCHANGE, "signal", message)

    async def both() -> bool:
        return len(await broker.dead_letters()) == 2

    await eventually(both, "two dead letters")
    first, second = await broker.dead_letters()
    assert [first.message.body, second.message.body] == [b"a", b"b"]  # oldest first
    assert first.reason == "bad payload a"
    assert first.origin_queue == ATTENTION_QUEUE
    assert first.message.headers == {"source": "test"}
    assert first.message.message_id == "id-a"
    assert first.dead_lettered_at is not None

    # Peeking removes nothing and keeps the order.
    again = await broker.dead_letters()
    assert [letter.message.body for letter in again] == [b"a", b"b"]
    assert [letter.message.body for letter in await broker.dead_letters(limit=1)] == [b"a"]
    # RabbitMQ applies a peek's requeues asynchronously: the depth may lag for a moment.
    await eventually(lambda: _depth_is(broker, DEAD_LETTER_QUEUE, 2), "the peeked letters")
    assert await broker.queue_depth(ATTENTION_QUEUE) == 0


async def test_work_that_failed_after_its_delivery_can_be_dead_lettered(
    broker: Broker,
) -> None:
    """A worker gives up on signals it took long after their deliveries were acked: they
    go to the dead letters as if they died in the attention queue, and replay there."""
    counted_before = _dead_letters_counted(ATTENTION_QUEUE)
    message = Message(b'{"id": "sig-1"}', {"origin-note": "kept"}, message_id="sig-1")
    await dead_letter(broker, message, ATTENTION_QUEUE, "run failed 5 times: boom")
    [letter] = await broker.dead_letters()
    assert letter.message.body == b'{"id": "sig-1"}'
    assert letter.message.headers == {"origin-note": "kept"}
    assert letter.message.message_id == "sig-1"
    assert (letter.origin_queue, letter.reason) == (ATTENTION_QUEUE, "run failed 5 times: boom")
    assert _dead_letters_counted(ATTENTION_QUEUE) - counted_before == 1
    with pytest.raises(ValueError, match="unknown queue"):
        await broker.dead_letter(message, "loom.nowhere", "x")
    received: list[bytes] = []

    async def take(delivery: Delivery) -> None:
        received.append(delivery.body)
        await delivery.ack()

    await broker.consume(ATTENTION_QUEUE, take)
    assert await broker.replay_dead_letters() == 1
    await eventually(lambda: _true(received == [b'{"id": "sig-1"}']), "the replayed signal")


async def test_replay_sends_dead_letters_back_to_their_queue(broker: Broker) -> None:
    async def reject(delivery: Delivery) -> None:
        await delivery.dead_letter("try later")

    rejecter = Inbox(reject)
    tag = await broker.consume(WORK_QUEUE, rejecter)
    await send(broker, b"1", b"2")
    for _ in range(2):
        await rejecter.next()
    await broker.cancel(tag)
    await eventually(lambda: _depth_is(broker, DEAD_LETTER_QUEUE, 2), "two dead letters")

    assert await broker.replay_dead_letters(limit=1) == 1
    await eventually(lambda: _depth_is(broker, WORK_QUEUE, 1), "the first replayed letter")
    assert [letter.message.body for letter in await broker.dead_letters()] == [b"2"]
    assert await broker.replay_dead_letters() == 1
    assert await broker.dead_letters() == []
    assert await broker.replay_dead_letters() == 0

    inbox = Inbox()
    await broker.consume(WORK_QUEUE, inbox)
    first, second = await inbox.next(), await inbox.next()
    assert [first.body, second.body] == [b"1", b"2"]
    assert first.headers == {}  # no reason or origin left on a replayed message
    assert first.message.message_id == "id-1"
    assert first.delivery_count == 1


async def test_replay_of_one_letter_by_its_message_id(broker: Broker) -> None:
    async def reject(delivery: Delivery) -> None:
        await delivery.dead_letter("try later")

    rejecter = Inbox(reject)
    tag = await broker.consume(WORK_QUEUE, rejecter)
    await send(broker, b"1", b"2", b"3")
    for _ in range(3):
        await rejecter.next()
    await broker.cancel(tag)
    await eventually(lambda: _depth_is(broker, DEAD_LETTER_QUEUE, 3), "three dead letters")

    assert await broker.replay_dead_letters(message_id="no-such-id") == 0
    assert await broker.replay_dead_letters(message_id="id-2") == 1
    await eventually(lambda: _depth_is(broker, WORK_QUEUE, 1), "the chosen letter replayed")
    assert [letter.message.body for letter in await broker.dead_letters()] == [b"1", b"3"]
    inbox = Inbox()
    await broker.consume(WORK_QUEUE, inbox)
    assert (await inbox.next()).body == b"2"


async def test_replay_leaves_letters_without_a_known_origin(broker: Broker) -> None:
    await broker.publish(DEAD_LETTER_EXCHANGE, "", Message(b"orphan", {"k": "v"}, "id-o"))
    await eventually(lambda: _depth_is(broker, DEAD_LETTER_QUEUE, 1), "the orphan letter")
    [letter] = await broker.dead_letters()
    assert (letter.reason, letter.origin_queue) == ("unknown", "")
    assert letter.message.headers == {"k": "v"}
    assert await broker.replay_dead_letters() == 0
    await eventually(lambda: _depth_is(broker, DEAD_LETTER_QUEUE, 1), "the orphan to stay")


# -- depth, prefetch, cancel -------------------------------------------------------------------


async def test_queue_depth_counts_ready_messages(broker: Broker) -> None:
    assert await broker.queue_depth(WORK_QUEUE) == 0
    await send(broker, b"1", b"2", b"3")
    await eventually(lambda: _depth_is(broker, WORK_QUEUE, 3), "three ready messages")
    assert await broker.queue_depth(ATTENTION_QUEUE) == 0
    with pytest.raises(ValueError, match="unknown queue"):
        await broker.queue_depth("no-such-queue")


async def test_queue_consumers_counts_the_live_consumers(broker: Broker) -> None:
    """What the console shows as a role's live replicas: consumers come and go."""

    async def ignore(delivery: Delivery) -> None:
        await delivery.ack()

    assert await broker.queue_consumers(WORK_QUEUE) == 0
    first = await broker.consume(WORK_QUEUE, ignore)
    await broker.consume(WORK_QUEUE, ignore)
    await broker.consume(ATTENTION_QUEUE, ignore)
    await eventually(lambda: _consumers_are(broker, WORK_QUEUE, 2), "two work consumers")
    assert await broker.queue_consumers(ATTENTION_QUEUE) == 1
    await broker.cancel(first)
    await eventually(lambda: _consumers_are(broker, WORK_QUEUE, 1), "one work consumer left")
    with pytest.raises(ValueError, match="unknown queue"):
        await broker.queue_consumers("no-such-queue")


async def test_prefetch_bounds_the_deliveries_in_flight(broker: Broker) -> None:
    gate = asyncio.Event()
    in_flight = 0
    most = 0
    done: list[bytes] = []

    async def slow(delivery: Delivery) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await gate.wait()
        in_flight -= 1
        done.append(delivery.body)
        await delivery.ack()

    inbox = Inbox(slow)
    await broker.consume(WORK_QUEUE, inbox, prefetch=2)
    await send(broker, *(str(i).encode() for i in range(5)))
    await inbox.next()
    await inbox.next()
    # Absence cannot be awaited: give a third delivery a moment to (wrongly) arrive.
    await asyncio.sleep(0.2)
    assert in_flight == 2
    assert inbox.deliveries.empty()

    gate.set()
    await eventually(lambda: _true(len(done) == 5), "all five messages")
    assert most == 2


async def test_cancel_lets_in_flight_handlers_settle(broker: Broker) -> None:
    gate = asyncio.Event()

    async def wait_then_ack(delivery: Delivery) -> None:
        await gate.wait()
        await delivery.ack()

    inbox = Inbox(wait_then_ack)
    tag = await broker.consume(WORK_QUEUE, inbox)
    assert broker.consuming
    await send(broker, b"in-flight")
    await inbox.next()

    cancelling = asyncio.create_task(broker.cancel(tag))
    # Let the cancel get past basic.cancel to its wait; it must still be waiting then.
    await asyncio.sleep(0.1)
    assert not cancelling.done()
    gate.set()
    await asyncio.wait_for(cancelling, WAIT)
    assert not _consuming(broker)

    await send(broker, b"after")
    await eventually(lambda: _depth_is(broker, WORK_QUEUE, 1), "the new message to wait")
    assert inbox.deliveries.empty()  # the cancelled consumer got nothing new


async def test_cancel_hands_unsettled_messages_to_the_next_consumer(broker: Broker) -> None:
    async def hang(delivery: Delivery) -> None:
        await asyncio.Event().wait()

    stuck = Inbox(hang)
    tag = await broker.consume(WORK_QUEUE, stuck, prefetch=1)
    await send(broker, b"1", b"2")
    assert (await stuck.next()).body == b"1"

    await broker.cancel(tag, timeout=0.05)
    assert not broker.consuming

    inbox = Inbox()
    await broker.consume(WORK_QUEUE, inbox)
    first, second = await inbox.next(), await inbox.next()
    assert [first.body, second.body] == [b"1", b"2"]
    assert first.delivery_count == 2  # it was delivered once before
    assert second.delivery_count == 1
    assert stuck.deliveries.empty()


async def test_cancel_of_an_unknown_tag_does_nothing(broker: Broker) -> None:
    await broker.cancel("no-such-tag")


# -- failures ----------------------------------------------------------------------------------


async def test_unroutable_and_unknown_destinations_raise(broker: Broker) -> None:
    with pytest.raises(BrokerUnavailable, match="unroutable"):
        await broker.publish(WORK_EXCHANGE, "no-such-routing-key", work(b"x"))
    with pytest.raises(ValueError, match="unknown exchange"):
        await broker.publish("no-such-exchange", "x", work(b"x"))
    with pytest.raises(ValueError, match="unknown queue"):
        await broker.consume("no-such-queue", Inbox())
    # The broker still works afterwards.
    await send(broker, b"ok")
    await eventually(lambda: _depth_is(broker, WORK_QUEUE, 1), "a routable message")


async def test_a_closed_broker_refuses_to_publish(backend: Backend) -> None:
    broker = await backend.peer()
    assert await broker.ping()
    await broker.close()
    assert not await broker.ping()
    assert not broker.consuming
    with pytest.raises(BrokerUnavailable):
        await send(broker, b"lost?")


async def test_start_is_idempotent_and_brokers_share_the_topology(backend: Backend) -> None:
    first = await backend.peer()
    await first.start()
    second = await backend.peer()
    await second.start()
    await send(first, b"from-first")
    inbox = Inbox()
    await second.consume(WORK_QUEUE, inbox)
    assert (await inbox.next()).body == b"from-first"


# -- RabbitMQ only -----------------------------------------------------------------------------


async def test_rabbitmq_unreachable_fails_fast_without_leaking_the_password() -> None:
    from loom.broker.rabbitmq import RabbitMQBroker

    broker = RabbitMQBroker(
        "amqp://loom:s3cret-Pa55@127.0.0.1:1/", topology=TOPOLOGY, connect_timeout=5
    )
    assert "s3cret-Pa55" not in broker.url
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        await broker.start()
    assert time.monotonic() - started < 5
    assert "s3cret-Pa55" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
    with pytest.raises(BrokerUnavailable, match="not started"):
        await send(broker, b"x")
    assert not await broker.ping()
    await broker.close()


async def test_rabbitmq_wrong_password_is_unavailable_and_masked() -> None:
    url = require_rabbitmq()
    from loom.broker.rabbitmq import RabbitMQBroker, mask_url

    bad = mask_url(url).replace("***", "not-the-Pa55word")
    broker = RabbitMQBroker(bad, topology=TOPOLOGY, connect_timeout=5)
    with pytest.raises(BrokerUnavailable) as caught:
        await broker.start()
    assert "not-the-Pa55word" not in str(caught.value)
    assert "not-the-Pa55word" not in broker.url


@pytest.fixture
async def rabbit_backend() -> AsyncIterator[Backend]:
    made = Backend("rabbitmq", require_rabbitmq(), f"loomtest-{uuid.uuid4().hex[:12]}")
    yield made
    await made.close()


async def test_rabbitmq_messages_are_persistent_and_queues_are_quorum(
    rabbit_backend: Backend,
) -> None:
    import aio_pika

    backend = rabbit_backend

    broker = await backend.peer()
    await send(broker, b"durable")
    connection = await aio_pika.connect(backend.url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{backend.namespace}.{WORK_QUEUE}", ensure=False)
        incoming = await queue.get(timeout=WAIT)
        assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert incoming.body == b"durable"
        await incoming.nack(requeue=True)
        # Declaring it as a classic queue must clash with the quorum queue start() made.
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(f"{backend.namespace}.{WORK_QUEUE}", durable=True)
    finally:
        await connection.close()


# -- memory only and the factory ---------------------------------------------------------------


async def test_memory_join_waits_until_the_queues_are_drained() -> None:
    broker = MemoryBroker(topology=TOPOLOGY)
    handled: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        await asyncio.sleep(0)
        handled.append(delivery.body)

    await broker.consume(WORK_QUEUE, handle, prefetch=3)
    await send(broker, *(str(i).encode() for i in range(10)))
    await broker.join(timeout=WAIT)
    assert sorted(handled) == sorted(str(i).encode() for i in range(10))

    await broker.publish(SIGNALS_EXCHANGE, "s", work(b"nobody-consumes"))
    with pytest.raises(TimeoutError):
        await broker.join(timeout=0.01)
    await broker.join(WORK_QUEUE, timeout=WAIT)  # that queue is drained


def test_broker_from_url() -> None:
    from loom.broker.rabbitmq import RabbitMQBroker

    assert isinstance(broker_from_url("memory://"), MemoryBroker)
    rabbit = broker_from_url("amqp://user:pw@rabbit:5672/loom", namespace="ns")
    assert isinstance(rabbit, RabbitMQBroker)
    assert rabbit.url == "amqp://user:***@rabbit:5672/loom"
    assert isinstance(broker_from_url("amqps://rabbit/"), RabbitMQBroker)
    with pytest.raises(ValueError, match="unsupported broker URL scheme 'redis'") as caught:
        broker_from_url("redis://:hunter2@localhost:6379/0")
    assert "hunter2" not in str(caught.value)


def test_importing_loom_broker_does_not_import_aio_pika() -> None:
    code = (
        "import sys, loom.broker; "
        "loaded = [m for m in ('aio_pika', 'aiormq') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- helpers ---------------------------------------------------------------------------------


async def _depth_is(broker: Broker, queue: str, depth: int) -> bool:
    return await broker.queue_depth(queue) == depth


async def _consumers_are(broker: Broker, queue: str, count: int) -> bool:
    return await broker.queue_consumers(queue) == count


async def _true(value: bool) -> bool:
    return value


def _consuming(broker: Broker) -> bool:
    return broker.consuming  # a call, so the type checker does not narrow it across awaits
