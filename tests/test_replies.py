"""Replies: a run's answer reaches the adapter serving the signal's reply_to, once, and a
failing or missing adapter dead-letters the reply instead of losing it.

Retry pauses run on a fake clock (``FakeTime``): the tests see which pauses the dispatcher
asked for without waiting them out.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest

from loom import Agent, Model, RuntimeSignal
from loom.broker.base import Message
from loom.broker.memory import MemoryBroker
from loom.core.approvals import Approval
from loom.daemon.app import Daemon
from loom.daemon.replies import ReplyDispatcher, publish_reply
from loom.daemon.settings import ReplySettings
from loom.intake import Adapter, Reply, UndeliverableReply
from loom.intake.replies import AWAITING_APPROVAL
from loom.state.base import StateUnavailable
from loom.state.memory_state import MemoryState
from loom.wire import REPLIES_EXCHANGE, REPLIES_QUEUE, REPLY_ROUTING_KEY, TOPOLOGY, publish_signal
from tests.test_daemon_memory import drain, settings


class FakeTime:
    """A clock that a pause moves forward at once; ``pauses`` lists the pauses asked for.

    With ``gate`` set, a pause also waits for the gate, so a test decides when it ends."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.now = 1_700_000_000.0
        self.pauses: list[float] = []
        self.gate = gate
        self.sleeping = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        self.sleeping.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)

    def use(self, dispatcher: ReplyDispatcher) -> FakeTime:
        dispatcher.budget.clock = self.clock
        dispatcher.budget.sleep = self.sleep
        return self


class Inbox(Adapter):
    """Collects replies to ``inbox:`` addresses; fails the first ``failures`` deliveries."""

    name = "inbox"

    def __init__(self, failures: int = 0) -> None:
        self.replies: list[Reply] = []
        self.failures = failures
        self.attempts = 0

    def replies_to(self, address: str) -> bool:
        return address.startswith("inbox:")

    async def send_reply(self, reply: Reply) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("inbox is down")
        self.replies.append(reply)


async def running(inbox: Inbox) -> AsyncIterator[Daemon]:
    daemon = Daemon(Agent(Model.test(), "Answer."), adapters=[inbox], settings=settings())
    daemon.replies.budget.retry_delay = 0.001
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def daemon(inbox: Inbox) -> AsyncIterator[Daemon]:
    async for started in running(inbox):
        yield started


async def test_the_run_answer_reaches_the_reply_address(daemon: Daemon, inbox: Inbox) -> None:
    signal = RuntimeSignal.create("is the api up?", session_id="ops", reply_to="inbox:ops-42")
    await publish_signal(daemon.broker, signal)
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]
    [reply] = inbox.replies
    assert reply.reply_to == "inbox:ops-42"
    assert reply.status == "completed"
    assert "is the api up?" in reply.output
    assert reply.signal_ids == (signal.id,)
    assert reply.session_id == "ops"


async def test_signals_without_reply_to_and_observed_ones_get_no_reply(
    daemon: Daemon, inbox: Inbox
) -> None:
    low = RuntimeSignal.create("fyi", urgency="low", session_id="ops", reply_to="inbox:low")
    await publish_signal(daemon.broker, low)
    await publish_signal(daemon.broker, RuntimeSignal.create("go", session_id="ops"))
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]
    assert inbox.replies == []


async def test_a_failing_delivery_is_retried_until_it_succeeds() -> None:
    inbox = Inbox(failures=2)
    async for daemon in running(inbox):
        await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="inbox:1"))
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
        assert inbox.attempts == 3
        assert len(inbox.replies) == 1
        assert await daemon.broker.dead_letters() == []


async def test_an_outage_longer_than_the_delivery_limit_delays_the_reply_only() -> None:
    inbox = Inbox(failures=12)  # far more than the broker's delivery limit of 5
    async for daemon in running(inbox):
        time = FakeTime().use(daemon.replies)
        daemon.replies.budget.retry_delay = 1.0
        await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="inbox:1"))
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
        assert (inbox.attempts, len(inbox.replies)) == (13, 1)
        assert await daemon.broker.dead_letters() == []
        # Doubling pauses, capped at LOOM_REPLIES__MAX_DELAY (120 s by default).
        assert time.pauses == [1, 2, 4, 8, 16, 32, 64, 120, 120, 120, 120, 120]


class RateLimited(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"slow down (retry after {retry_after})")
        self.retry_after = retry_after


class Throttled(Inbox):
    """Refuses the first deliveries with a Retry-After, like Slack's 429."""

    def __init__(self, retry_afters: list[float | None]) -> None:
        super().__init__()
        self.retry_afters = retry_afters

    async def send_reply(self, reply: Reply) -> None:
        self.attempts += 1
        if self.retry_afters:
            raise RateLimited(self.retry_afters.pop(0))
        self.replies.append(reply)


async def test_a_retry_after_is_waited_out_even_past_the_delivery_limit() -> None:
    throttled = Throttled([30.0, 30.0, 30.0, 30.0, 30.0, 0.5, None, 600.0])
    async for daemon in running(throttled):
        time = FakeTime().use(daemon.replies)
        daemon.replies.budget.retry_delay = 1.0
        await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="inbox:1"))
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
        assert len(throttled.replies) == 1
        assert await daemon.broker.dead_letters() == []
        # max(backoff, Retry-After), at most max_delay: a 600 s Retry-After waits 120 s.
        assert time.pauses == [30, 30, 30, 30, 30, 32, 64, 120]


async def test_a_delivery_failing_past_the_retry_budget_is_dead_lettered() -> None:
    inbox = Inbox(failures=10_000)
    async for daemon in running(inbox):
        time = FakeTime().use(daemon.replies)
        daemon.replies.budget.retry_delay = 1.0
        await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="inbox:1"))
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
        [letter] = await daemon.broker.dead_letters()
        assert letter.origin_queue == REPLIES_QUEUE
        assert "inbox is down" in letter.reason
        # The default budget (LOOM_REPLIES__RETRY_BUDGET) is 15 minutes from the first failure.
        assert sum(time.pauses) == 900
        tried = re.search(r"failed (\d+) times over 15m00s \(retry budget 15m00s\)", letter.reason)
        assert tried is not None, letter.reason
        assert int(tried.group(1)) == inbox.attempts == len(time.pauses) + 1
        dead = Reply.from_json(letter.message.body)
        assert dead.reply_to == "inbox:1"
        assert dead.attempts == inbox.attempts - 1  # the copy that failed last counted the rest


async def test_the_retry_budget_and_pauses_are_settings() -> None:
    inbox = Inbox(failures=10_000)
    configured = settings(replies={"retry_budget": 10, "retry_delay": 2, "max_delay": 3})
    daemon = Daemon(Agent(Model.test(), "Answer."), adapters=[inbox], settings=configured)
    time = FakeTime().use(daemon.replies)
    await daemon.start()
    try:
        await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="inbox:1"))
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
    finally:
        await daemon.stop()
    assert time.pauses == [2, 3, 3, 2]  # the last pause ends at the budget
    [letter] = await daemon.broker.dead_letters()
    assert "failed 5 times over 10s (retry budget 10s)" in letter.reason


async def test_a_shutdown_during_the_pause_hands_the_reply_back() -> None:
    broker, state = MemoryBroker(topology=TOPOLOGY), MemoryState()
    await broker.start()
    inbox = Inbox(failures=1)
    dispatcher = ReplyDispatcher(broker, state, [inbox])
    time = FakeTime(gate=asyncio.Event()).use(dispatcher)  # the pause never ends by itself
    await dispatcher.start()
    await publish_reply(broker, Reply("inbox:1", "s", "run_1", "completed", "hello"))
    await asyncio.wait_for(time.sleeping.wait(), 5)
    await dispatcher.stop(0)  # cancels the handler in its pause
    assert await broker.queue_depth(REPLIES_QUEUE) == 1  # the original, not lost
    assert await broker.dead_letters() == []
    dispatcher = ReplyDispatcher(broker, state, [inbox])
    await dispatcher.start()
    await broker.join()
    assert [r.output for r in inbox.replies] == ["hello"]
    await dispatcher.stop(1)
    await broker.close()


async def test_an_address_no_adapter_serves_is_dead_lettered(daemon: Daemon) -> None:
    await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="carrier-pigeon:1"))
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]
    [letter] = await daemon.broker.dead_letters()
    assert "no adapter delivers replies to 'carrier-pigeon'" in letter.reason


async def test_a_reply_delivered_before_a_crash_is_not_sent_again(inbox: Inbox) -> None:
    broker, state = MemoryBroker(topology=TOPOLOGY), MemoryState()
    await broker.start()
    dispatcher = ReplyDispatcher(broker, state, [inbox])
    await dispatcher.start()
    reply = Reply("inbox:1", "s", "run_1", "completed", "hello")
    await publish_reply(broker, reply)
    await publish_reply(broker, reply)  # the same reply redelivered
    await broker.join()
    assert [r.output for r in inbox.replies] == ["hello"]
    await dispatcher.stop(1)
    await broker.close()


def approval_request(run_id: str, *approval_ids: str) -> Reply:
    """A paused run's request for decisions on ``approval_ids``."""
    approvals = [
        Approval.request(
            tool="restart", arguments={"service": "api"}, call_id=f"call_{i}", run_id=run_id,
            session_id="s", ttl=3600,
        ).to_dict() | {"id": approval_id}
        for i, approval_id in enumerate(approval_ids)
    ]  # fmt: skip
    return Reply(
        "inbox:1", "s", run_id, AWAITING_APPROVAL, "so far", extra={"approvals": approvals}
    )


async def test_each_pause_of_a_run_and_its_answer_are_all_delivered(inbox: Inbox) -> None:
    """A run pauses twice and then answers, each time with its run id to the same address:
    three replies, none taken for a copy of another (and each copy still sent once)."""
    broker, state = MemoryBroker(topology=TOPOLOGY), MemoryState()
    await broker.start()
    dispatcher = ReplyDispatcher(broker, state, [inbox])
    await dispatcher.start()
    first, second = approval_request("run_1", "apr_a"), approval_request("run_1", "apr_b")
    answer = Reply("inbox:1", "s", "run_1", "completed", "done")
    for reply in (first, first, second, answer, second, answer):
        await publish_reply(broker, reply)
    await broker.join()
    assert [(r.status, r.output) for r in inbox.replies] == [
        (AWAITING_APPROVAL, "so far"), (AWAITING_APPROVAL, "so far"), ("completed", "done")
    ]  # fmt: skip
    assert [[a.id for a in r.approvals()] for r in inbox.replies] == [["apr_a"], ["apr_b"], []]
    assert not inbox.replies[0].ok
    assert inbox.replies[0].awaiting_approval
    await dispatcher.stop(1)
    await broker.close()


class Slow(Inbox):
    """Holds each delivery until ``done`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = asyncio.Event()
        self.done = asyncio.Event()

    async def send_reply(self, reply: Reply) -> None:
        self.attempts += 1
        self.sending.set()
        await self.done.wait()
        self.replies.append(reply)


async def test_two_copies_of_a_reply_are_not_sent_at_once() -> None:
    broker, state = MemoryBroker(topology=TOPOLOGY), MemoryState()
    await broker.start()
    slow = Slow()
    dispatcher = ReplyDispatcher(broker, state, [slow])
    time = FakeTime(gate=slow.done).use(dispatcher)
    await dispatcher.start()
    reply = Reply("inbox:1", "s", "run_1", "completed", "hello")
    await publish_reply(broker, reply)
    await publish_reply(broker, reply)  # publish_reply's own retry after a lost confirm
    await asyncio.wait_for(slow.sending.wait(), 5)
    await asyncio.wait_for(time.sleeping.wait(), 5)  # the second copy waits its turn
    assert slow.attempts == 1
    slow.done.set()
    await broker.join()
    assert [r.output for r in slow.replies] == ["hello"]
    assert time.pauses == [1.0]  # it waited (not acked, not dead-lettered), then found it sent
    assert await broker.dead_letters() == []
    await dispatcher.stop(1)
    await broker.close()


class FlakyState(MemoryState):
    """Memory state whose claims fail ``failures`` times for keys with ``prefix``."""

    def __init__(self, prefix: str, failures: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.failures = failures

    async def claim(self, key: str, owner: str, ttl: float) -> str | None:
        if key.startswith(self.prefix) and self.failures > 0:
            self.failures -= 1
            raise StateUnavailable("Redis at redis://state:6379/0 is unavailable: reset")
        return await super().claim(key, owner, ttl)


async def test_a_state_outage_after_the_post_does_not_post_it_again() -> None:
    broker, state = MemoryBroker(topology=TOPOLOGY), FlakyState("reply-sent:", failures=10)
    await broker.start()
    inbox = Inbox()
    dispatcher = ReplyDispatcher(broker, state, [inbox])
    time = FakeTime().use(dispatcher)
    await dispatcher.start()
    reply = Reply("inbox:1", "s", "run_1", "completed", "hello")
    await publish_reply(broker, reply)
    await broker.join()
    assert [r.output for r in inbox.replies] == ["hello"]  # acked although not marked
    # A redelivery soon after (the sent marker is missing) finds the sending claim held.
    await publish_reply(broker, reply)
    await asyncio.wait_for(time.sleeping.wait(), 5)
    await dispatcher.stop(0)
    assert [r.output for r in inbox.replies] == ["hello"]
    await broker.close()


async def test_a_reply_sent_during_an_outage_is_marked_once_the_state_is_back() -> None:
    """Before: the mark was given up, so a copy arriving after the sending claim expired
    (a worker that sent its outbox again after the same outage) was posted twice."""
    broker, state = MemoryBroker(topology=TOPOLOGY), FlakyState("reply-sent:", failures=2)
    await broker.start()
    inbox = Inbox()
    dispatcher = ReplyDispatcher(broker, state, [inbox])
    FakeTime().use(dispatcher)
    await dispatcher.start()
    reply = Reply("inbox:1", "s", "run_1", "completed", "hello")
    await publish_reply(broker, reply)
    await broker.join()
    for _ in range(100):  # the mark is retried in the background
        if state.failures == 0 and not dispatcher._marking:
            break
        await asyncio.sleep(0.01)
    for key in [k for k in list(state._dedupe) if k.startswith("reply-sending:")]:
        await state.forget(key)  # the sending claim expired
    await publish_reply(broker, reply)
    await broker.join()
    await dispatcher.stop(0)
    assert [r.output for r in inbox.replies] == ["hello"]
    await broker.close()


async def test_a_state_outage_before_the_post_backs_off_past_the_delivery_limit() -> None:
    broker, state = MemoryBroker(topology=TOPOLOGY), FlakyState("reply-sending:", failures=7)
    await broker.start()
    inbox = Inbox()
    dispatcher = ReplyDispatcher(broker, state, [inbox], settings=ReplySettings(retry_delay=1))
    time = FakeTime().use(dispatcher)
    await dispatcher.start()
    await publish_reply(broker, Reply("inbox:1", "s", "run_1", "completed", "hello"))
    await broker.join()
    assert [r.output for r in inbox.replies] == ["hello"]
    assert time.pauses == [1, 2, 4, 8, 16, 32, 64]
    assert await broker.dead_letters() == []
    await dispatcher.stop(1)
    await broker.close()


def test_replies_queued_by_an_older_or_newer_version_are_read() -> None:
    old = {"reply_to": "inbox:1", "session_id": "s", "run_id": "r", "status": "completed",
           "output": "hi", "signal_ids": ["sig_1"]}  # fmt: skip
    reply = Reply.from_json(json.dumps(old).encode())
    assert (reply.attempts, reply.first_failed_at, reply.signal_ids) == (0, None, ("sig_1",))
    newer = Reply.from_json(json.dumps(old | {"attempts": 3, "added_later": 1}).encode())
    assert newer.attempts == 3
    again = Reply.from_json(newer.to_json())
    assert again == newer
    for bad in ({"attempts": -1}, {"attempts": "3"}, {"first_failed_at": "yesterday"}):
        with pytest.raises(ValueError, match=r"attempts|first_failed_at"):
            Reply.from_json(json.dumps(old | bad).encode())


async def test_a_broken_reply_is_dead_lettered(daemon: Daemon) -> None:
    await daemon.broker.publish(REPLIES_EXCHANGE, REPLY_ROUTING_KEY, Message(b'{"reply_to": 1}'))
    await daemon.broker.join()  # type: ignore[attr-defined]
    [letter] = await daemon.broker.dead_letters()
    assert letter.reason.startswith("invalid reply")


class Refusing(Inbox):
    async def send_reply(self, reply: Reply) -> None:
        self.attempts += 1
        raise UndeliverableReply("that address can never be reached")


async def test_an_undeliverable_reply_is_dead_lettered_without_retries() -> None:
    refusing = Refusing()
    async for daemon in running(refusing):
        await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="inbox:1"))
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
        [letter] = await daemon.broker.dead_letters()
        assert "undeliverable: that address can never be reached" in letter.reason
        assert refusing.attempts == 1
