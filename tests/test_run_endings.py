"""A run's ending under faults: the state or the broker failing after the model answered
neither loses the answer nor runs or replies twice (issue 21, item 2)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loom import Agent, Model, ModelResponse, RuntimeSignal
from loom.broker.base import BrokerUnavailable, Message
from loom.broker.memory import MemoryBroker
from loom.daemon import worker as worker_module
from loom.daemon.attention import pending_json
from loom.daemon.worker import SessionWorker
from loom.intake.replies import Reply
from loom.providers.base import ModelRequest
from loom.state.base import StateUnavailable
from loom.state.memory_sessions import InMemorySessionStore
from loom.state.memory_state import MemoryState
from loom.wire import REPLIES_EXCHANGE, REPLIES_QUEUE, TOPOLOGY

SWEEP = 0.05


class FlakyStore(InMemorySessionStore):
    """Transcripts in memory, away (a Redis failover) for the first ``outages`` writes."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages

    async def append(self, session_id: str, **changes: Any) -> None:
        if self.outages > 0:
            self.outages -= 1
            raise StateUnavailable("Redis at redis://r:6379/0 is unavailable: connection reset")
        await super().append(session_id, **changes)


class FlakyRepliesBroker(MemoryBroker):
    """A broker that refuses the first ``outages`` publishes of a reply (RabbitMQ away)."""

    def __init__(self, outages: int) -> None:
        super().__init__(topology=TOPOLOGY)
        self.outages = outages

    async def publish(self, exchange: str, routing_key: str, message: Message) -> None:
        if exchange == REPLIES_EXCHANGE and self.outages > 0:
            self.outages -= 1
            raise BrokerUnavailable("RabbitMQ is unavailable")
        await super().publish(exchange, routing_key, message)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "ENDING_RETRY_FIRST", 0.01)


class CountingModel:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        return ModelResponse(text=f"answer {self.calls}")


async def replies(broker: MemoryBroker) -> list[Reply]:
    return [Reply.from_json(e.message.body) for e in broker._queues[REPLIES_QUEUE].ready]


async def handle(state: MemoryState, broker: MemoryBroker, model: CountingModel) -> None:
    """One signal that asks for an answer, handled by one worker until nothing is left."""
    agent = Agent(Model.function(model), session_store=state.sessions)
    signal = RuntimeSignal.create("deploy failed", session_id="ops", reply_to="webhook:cb-1")
    await state.add_pending("ops", pending_json(signal, "queue"))
    await state.mark_ready("ops")
    worker = SessionWorker(agent, broker, state, sweep_interval=SWEEP)
    await worker.start()
    try:
        for _ in range(500):
            settled = not await state.in_flight("ops")
            if settled and not worker.active_sessions and await replies(broker):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the signal was not settled")
    finally:
        await worker.stop(timeout=1)


async def test_a_state_outage_after_the_answer_keeps_the_answer() -> None:
    """Before: the save failed, the run was reported failed, and its answer went out as a
    failure; now the ending is stored once the state is back."""
    state = MemoryState()
    state.sessions = FlakyStore(outages=2)
    broker = MemoryBroker(topology=TOPOLOGY)
    await broker.start()
    model = CountingModel()
    try:
        await handle(state, broker, model)
        [reply] = await replies(broker)
    finally:
        await broker.close()
    assert (reply.status, reply.output) == ("completed", "answer 1")
    assert model.calls == 1
    snapshot = await state.sessions.load("ops")
    assert snapshot is not None
    assert [run.status for run in snapshot.runs] == ["completed"]


async def test_a_broker_outage_after_the_run_was_stored_sends_the_reply_once() -> None:
    """Before: the reply could not be published, so the signals stayed in flight and the
    session ran again (a second model call, a second run); now the stored ending's reply
    waits in the outbox and goes out when the broker is back."""
    state = MemoryState()
    broker = FlakyRepliesBroker(outages=3)  # publish_reply's own three attempts, all refused
    await broker.start()
    model = CountingModel()
    try:
        await handle(state, broker, model)
        sent = await replies(broker)
    finally:
        await broker.close()
    assert [(r.status, r.output) for r in sent] == [("completed", "answer 1")]
    assert model.calls == 1
    snapshot = await state.sessions.load("ops")
    assert snapshot is not None
    assert len(snapshot.runs) == 1


class EndingLandsThenTimesOut(MemoryState):
    """The first run's ending lands, taking the signal that came during the run, but its
    answer is lost (a Redis timeout after the write): the worker retries the ending."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    async def finish_and_continue(self, lease: Any, ending: Any, then: Any) -> Any:
        if not self.armed:
            return await super().finish_and_continue(lease, ending, then)
        self.armed = False
        later = RuntimeSignal.create("second: disk full", session_id="ops")
        await self.add_pending("ops", pending_json(later, "queue"))  # came during run 1
        await self.mark_ready("ops")
        await super().finish_and_continue(lease, ending, then)  # lands
        raise StateUnavailable("Redis at redis://r:6379/0: timeout")  # the answer is lost


async def test_a_retried_ending_runs_the_signals_its_first_attempt_took() -> None:
    """Before: the retry found nothing pending and let the session go, and the signal the
    first attempt took stayed in flight with no lease and no ready mark: never run."""
    state = EndingLandsThenTimesOut()
    broker = MemoryBroker(topology=TOPOLOGY)
    await broker.start()
    model = CountingModel()
    agent = Agent(Model.function(model), session_store=state.sessions)
    first = RuntimeSignal.create("first: deploy failed", session_id="ops")
    await state.add_pending("ops", pending_json(first, "queue"))
    await state.mark_ready("ops")
    worker = SessionWorker(agent, broker, state, sweep_interval=SWEEP)
    await worker.start()
    try:
        for _ in range(500):
            if model.calls == 2 and not await state.in_flight("ops"):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail(f"the second signal was not run ({model.calls} model call(s))")
    finally:
        await worker.stop(timeout=1)
        await broker.close()
    snapshot = await state.sessions.load("ops")
    assert snapshot is not None
    assert [run.status for run in snapshot.runs] == ["completed", "completed"]
