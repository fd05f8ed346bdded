"""Replies: a run's answer reaches the adapter serving the signal's reply_to, once, and a
failing or missing adapter dead-letters the reply instead of losing it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from loom import Agent, Model, RuntimeSignal
from loom.adapters.base import Adapter, Reply, UndeliverableReply
from loom.broker.base import REPLIES_QUEUE
from loom.broker.memory import MemoryBroker
from loom.daemon.app import Daemon
from loom.daemon.replies import ReplyDispatcher, publish_reply
from loom.daemon.signals_io import publish_signal
from loom.state.memory_state import MemoryState
from tests.test_daemon_memory import drain, settings


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
    daemon.replies.retry_delay = 0.001
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


async def test_a_delivery_failing_past_the_limit_is_dead_lettered() -> None:
    inbox = Inbox(failures=100)
    async for daemon in running(inbox):
        await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="inbox:1"))
        await drain(daemon)
        await daemon.broker.join()  # type: ignore[attr-defined]
        [letter] = await daemon.broker.dead_letters()
        assert letter.origin_queue == REPLIES_QUEUE
        assert "inbox is down" in letter.reason
        assert Reply.from_json(letter.message.body).reply_to == "inbox:1"


async def test_an_address_no_adapter_serves_is_dead_lettered(daemon: Daemon) -> None:
    await publish_signal(daemon.broker, RuntimeSignal.create("x", reply_to="carrier-pigeon:1"))
    await drain(daemon)
    await daemon.broker.join()  # type: ignore[attr-defined]
    [letter] = await daemon.broker.dead_letters()
    assert "no adapter delivers replies to 'carrier-pigeon'" in letter.reason


async def test_a_reply_delivered_before_a_crash_is_not_sent_again(inbox: Inbox) -> None:
    broker, state = MemoryBroker(), MemoryState()
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
