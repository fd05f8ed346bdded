"""The delivery-policy wrappers on fake deliveries: backoff, dead-letter counting, retry
budgets and poison limits. Pauses go to a recording ``sleep``; nothing waits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from loom.broker.base import BrokerUnavailable, Delivery, Message
from loom.broker.memory import MemoryBroker
from loom.delivery import (
    Backoff,
    PoisonLimit,
    RetryBudget,
    RetryLater,
    backoff,
    count_dead_letters,
    dead_letter,
)
from loom.state.base import StateUnavailable
from loom.wire import ATTENTION_QUEUE, TOPOLOGY
from tests.fakes.delivery import FakeDelivery


class Sleeps:
    """An injected ``sleep`` that records the pauses and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


# -- backoff ---------------------------------------------------------------------------------


async def test_an_outage_is_waited_out_in_place_without_spending_a_delivery() -> None:
    """Before: each failed attempt went back to the broker, counting toward the delivery
    limit, so a 10 s Redis outage dead-lettered accepted signals."""
    sleeps = Sleeps()
    attempts = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 5:
            raise StateUnavailable("redis is away")
        await delivery.ack()

    delivery = FakeDelivery(delivery_count=1)
    await backoff(handler, sleep=sleeps)(delivery)
    assert delivery.outcome == "ack"  # settled once, by the handler: no delivery spent
    assert attempts == 5
    assert sleeps.pauses == [0.5, 1.0, 2.0, 4.0]  # doubling


async def test_an_outage_past_the_patience_goes_back_to_the_broker() -> None:
    sleeps = Sleeps()

    async def handler(delivery: Delivery) -> None:
        raise BrokerUnavailable("rabbitmq is away")

    policy = Backoff(first=1.0, most=4.0, patience=10.0)
    with pytest.raises(BrokerUnavailable):
        await backoff(handler, policy, sleep=sleeps)(FakeDelivery(delivery_count=1))
    assert sleeps.pauses == [1.0, 2.0, 4.0]  # 7 s waited; another 4 s would pass 10


async def test_backoff_leaves_other_failures_and_settled_deliveries_alone() -> None:
    sleeps = Sleeps()

    async def wrong(delivery: Delivery) -> None:
        raise ValueError("not an outage")

    async def settled_then_away(delivery: Delivery) -> None:
        await delivery.ack()
        raise BrokerUnavailable("gone after the ack")

    with pytest.raises(ValueError, match="not an outage"):
        await backoff(wrong, sleep=sleeps)(FakeDelivery())
    with pytest.raises(BrokerUnavailable):
        await backoff(settled_then_away, sleep=sleeps)(FakeDelivery())
    assert sleeps.pauses == []


async def test_backoff_policy_is_configurable() -> None:
    sleeps = Sleeps()

    async def handler(delivery: Delivery) -> None:
        raise KeyError("flaky")

    policy = Backoff(first=1.0, most=3.0, on=(KeyError,), patience=8.0)
    with pytest.raises(KeyError):
        await backoff(handler, policy, sleep=sleeps)(FakeDelivery(delivery_count=1))
    assert sleeps.pauses == [1.0, 2.0, 3.0]


# -- dead-letter counting --------------------------------------------------------------------


def counted(queue: str) -> float:
    return REGISTRY.get_sample_value("loom_dead_letters_total", {"queue": queue}) or 0.0


async def test_a_handlers_dead_letter_is_counted_once() -> None:
    before = counted("q.explicit")

    async def reject(delivery: Delivery) -> None:
        await delivery.dead_letter("not for us")

    delivery = FakeDelivery(queue="q.explicit")
    await count_dead_letters(reject)(delivery)
    assert (delivery.outcome, delivery.reason) == ("dead_letter", "not for us")
    assert counted("q.explicit") - before == 1


async def test_only_the_final_deliverys_retry_is_a_dead_letter() -> None:
    before = counted("q.retry")

    async def again(delivery: Delivery) -> None:
        await delivery.retry()

    await count_dead_letters(again)(FakeDelivery(queue="q.retry", final=False))
    assert counted("q.retry") == before
    await count_dead_letters(again)(FakeDelivery(queue="q.retry", final=True))
    assert counted("q.retry") - before == 1


async def test_a_final_delivery_that_fails_is_retried_here_and_counted() -> None:
    before = counted("q.fail")

    async def broken(delivery: Delivery) -> None:
        raise ValueError("boom")

    first, last = FakeDelivery(queue="q.fail"), FakeDelivery(queue="q.fail", final=True)
    for delivery in (first, last):
        with pytest.raises(ValueError, match="boom"):
            await count_dead_letters(broken)(delivery)
        assert delivery.outcome == "retry"  # settled here, so the broker does not again
    assert counted("q.fail") - before == 1


async def test_a_hand_back_that_fails_leaves_the_handlers_own_error() -> None:
    """The broker connection is gone while a failure is handed back: the consumer still
    sees (and logs) what the handler raised, not the lost connection."""

    class Unreachable(FakeDelivery):
        async def retry(self) -> None:
            raise BrokerUnavailable("connection lost")

    async def broken(delivery: Delivery) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await count_dead_letters(broken)(Unreachable(queue="q.lost", final=True))


async def test_acks_are_not_counted_and_the_handler_sees_the_delivery() -> None:
    before = counted("q.ack")
    seen: list[tuple[bytes, int, bool]] = []

    async def ack(delivery: Delivery) -> None:
        seen.append((delivery.body, delivery.delivery_count, delivery.settled))
        await delivery.ack()
        assert delivery.settled

    delivery = FakeDelivery(b"hello", queue="q.ack", delivery_count=2)
    await count_dead_letters(ack)(delivery)
    assert seen == [(b"hello", 2, False)]
    assert delivery.outcome == "ack"
    assert counted("q.ack") == before


async def test_work_given_up_after_its_delivery_is_dead_lettered_and_counted() -> None:
    broker = MemoryBroker(topology=TOPOLOGY)
    before = counted(ATTENTION_QUEUE)
    await dead_letter(broker, Message(b"sig"), ATTENTION_QUEUE, "failed 5 times")
    [letter] = await broker.dead_letters()
    assert (letter.message.body, letter.reason) == (b"sig", "failed 5 times")
    assert counted(ATTENTION_QUEUE) - before == 1


# -- retry budget ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps = Sleeps()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await self.sleeps(seconds)
        self.now += seconds


def budget(clock: Clock, **settings: float) -> RetryBudget:
    return RetryBudget(clock=clock, sleep=clock.sleep, **settings)


class Requeues:
    def __init__(self, fail: bool = False) -> None:
        self.copies: list[tuple[int, float]] = []
        self.fail = fail

    async def __call__(self, attempts: int, first_failed_at: float) -> None:
        if self.fail:
            raise BrokerUnavailable("rabbit is away")
        self.copies.append((attempts, first_failed_at))


def later(
    requeue: Requeues,
    attempts: int = 0,
    first: float | None = None,
    *,
    problem: Exception | None = None,
    gave_up: Callable[[], None] | None = None,
) -> RetryLater:
    return RetryLater(
        problem or ConnectionError("endpoint down"),
        attempts=attempts,
        first_failed_at=first,
        requeue=requeue,
        subject="job j1",
        what="test job",
        gave_up=gave_up,
    )


async def test_a_failed_attempt_pauses_requeues_a_counting_copy_then_acks() -> None:
    clock, requeue = Clock(), Requeues()

    async def handler(delivery: Delivery) -> None:
        raise later(requeue)

    delivery = FakeDelivery()
    await budget(clock, retry_delay=2.0).wrap(handler)(delivery)
    assert clock.sleeps.pauses == [2.0]
    assert requeue.copies == [(1, 1_000.0)]  # first failure now, one attempt
    assert delivery.outcome == "ack"


async def test_pauses_double_honour_retry_after_and_stay_within_the_budget() -> None:
    clock = Clock()
    policy = budget(clock, retry_delay=1.0, max_delay=8.0, budget=100.0)
    assert [policy.pause(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.pause(1, retry_after=5.0) == 5.0
    assert policy.pause(1, retry_after=50.0) == 8.0

    class Throttled(Exception):
        retry_after = 30.0

    requeue = Requeues()
    # 95 s of the 100 s budget are spent: the pause is cut to what is left.
    failure = later(requeue, attempts=3, first=clock.now - 95.0, problem=Throttled("slow"))
    await policy.retry_later(FakeDelivery(), failure)
    assert clock.sleeps.pauses == [5.0]


async def test_past_the_budget_it_is_dead_lettered_saying_how_long_and_how_often() -> None:
    clock, requeue, gave_up = Clock(), Requeues(), []
    failure = later(requeue, 6, clock.now - 960.0, gave_up=lambda: gave_up.append(1))
    delivery = FakeDelivery()
    await budget(clock, budget=900.0).retry_later(delivery, failure)
    assert delivery.outcome == "dead_letter"
    assert delivery.reason == (
        "test job failed 7 times over 16m00s (retry budget 15m00s): endpoint down"
    )
    assert requeue.copies == []
    assert clock.sleeps.pauses == []
    assert gave_up == [1]


async def test_a_copy_that_cannot_be_requeued_hands_the_original_back() -> None:
    clock, delivery = Clock(), FakeDelivery()
    await budget(clock).retry_later(delivery, later(Requeues(fail=True)))
    assert delivery.outcome == "retry"


async def test_other_failures_pass_through_the_budget() -> None:
    async def broken(delivery: Delivery) -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await budget(Clock()).wrap(broken)(FakeDelivery())


# -- poison limit ----------------------------------------------------------------------------


class Markers:
    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float | None]] = {}

    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
        self.values[key] = (value, ttl)

    async def marker(self, key: str) -> str | None:
        held = self.values.get(key)
        return held[0] if held else None


async def test_the_poison_limit_counts_failures_in_a_row_and_exempts_outages() -> None:
    markers = Markers()
    limit = PoisonLimit(markers, max_attempts=3, memory=60.0)
    assert await limit.failed("k", StateUnavailable("away")) is None
    assert await limit.failed("k", BrokerUnavailable("away")) is None
    assert markers.values == {}
    assert await limit.failed("k", ValueError("1")) is None
    assert await limit.failed("k", ValueError("2")) is None
    assert markers.values["k"] == ("2", 60.0)
    assert await limit.failed("k", ValueError("3")) == 3
    assert await limit.failed("other", ValueError("1")) is None  # keys count apart
    await limit.recovered("k")
    assert await limit.failed("k", ValueError("again")) is None
    assert markers.values["k"] == ("1", 60.0)
    with pytest.raises(ValueError, match="at least 1"):
        PoisonLimit(markers, max_attempts=0)
