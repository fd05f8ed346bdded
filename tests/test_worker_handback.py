"""A session a worker hands back (shutdown) or fails on gets a work notice, so the next worker
wakes for it even when none is left consuming (KEDA scaled to zero) and no sweep runs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from loom import Agent, Model, ModelResponse, RuntimeSignal
from loom.broker.memory import MemoryBroker
from loom.daemon.attention import pending_json
from loom.daemon.worker import SessionWorker
from loom.providers.base import ModelRequest
from loom.state.memory_state import MemoryState
from loom.wire import TOPOLOGY, WORK_QUEUE, parse_work, publish_work

NO_SWEEP = 3600.0  # the sweep never runs in these tests: only a notice can wake a worker


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker(topology=TOPOLOGY)
    await broker.start()
    yield broker
    await broker.close()


def answering() -> Agent:
    return Agent(Model.function(lambda request: ModelResponse(text="done")))


async def notices(broker: MemoryBroker) -> list[str]:
    """The sessions named by the work notices waiting in the queue (left there)."""
    return [parse_work(e.message.body) for e in broker._queues[WORK_QUEUE].ready]


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


async def queue_signal(state: MemoryState, broker: MemoryBroker, session_id: str) -> None:
    signal = RuntimeSignal.create("deploy failed", session_id=session_id)
    await state.add_pending(session_id, pending_json(signal, "queue"))
    await state.mark_ready(session_id)
    await publish_work(broker, session_id)


async def test_a_run_cancelled_by_shutdown_is_handed_back_with_a_work_notice(
    broker: MemoryBroker,
) -> None:
    state = MemoryState()
    started = asyncio.Event()

    async def endless(request: ModelRequest) -> ModelResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    first = SessionWorker(Agent(Model.function(endless)), broker, state, sweep_interval=NO_SWEEP)
    await first.start()
    await queue_signal(state, broker, "ops")
    await asyncio.wait_for(started.wait(), 5)
    assert await notices(broker) == []  # the notice was taken when the run started
    await first.stop(timeout=0.05)

    assert await notices(broker) == ["ops"]
    assert await state.ready_sessions() == ["ops"]
    assert len(await state.in_flight("ops")) == 1
    # The next worker (here: started from zero) wakes for the notice alone.
    second = SessionWorker(answering(), broker, state, sweep_interval=NO_SWEEP)
    await second.start()
    try:
        await broker.join(WORK_QUEUE, timeout=5)

        async def done() -> bool:
            return not await state.in_flight("ops") and not second.active_sessions

        await until(done, "the second worker to run the session")
    finally:
        await second.stop(timeout=1)
    assert await state.ready_sessions() == []
    assert await state.pending("ops") == []


async def test_a_failed_session_gets_its_notice_no_later_than_shutdown(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while running waits a sweep interval before its notice (no tight retry
    loop); a worker that stops first sends the notice at once."""
    state = MemoryState()
    failed = asyncio.Event()

    async def unreachable(token: int, ending: object) -> bool:
        failed.set()
        raise ConnectionError("state unreachable")

    monkeypatch.setattr(state, "finish_run", unreachable)
    worker = SessionWorker(answering(), broker, state, sweep_interval=NO_SWEEP)
    await worker.start()
    await queue_signal(state, broker, "ops")
    await asyncio.wait_for(failed.wait(), 5)

    async def idle() -> bool:
        return not worker.active_sessions

    await until(idle, "the failed session to be let go of")
    await asyncio.sleep(0.05)
    assert await notices(broker) == []  # not yet: the sweep's pace
    assert await state.ready_sessions() == ["ops"]
    await worker.stop(timeout=1)
    assert await notices(broker) == ["ops"]


async def test_a_failed_notice_publish_is_only_logged(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    state = MemoryState()
    started = asyncio.Event()

    async def endless(request: ModelRequest) -> ModelResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    worker = SessionWorker(Agent(Model.function(endless)), broker, state, sweep_interval=NO_SWEEP)
    await worker.start()
    await queue_signal(state, broker, "ops")
    await asyncio.wait_for(started.wait(), 5)
    await broker.close()  # the broker is gone: the notice cannot be published
    await worker.stop(timeout=0.05)
    assert await state.ready_sessions() == ["ops"]  # a sweep will still find it
    assert "work notice not published" in caplog.text


async def test_the_drain_keeps_within_its_timeout_hand_back_included(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: runs were given the whole timeout and the hand-back two seconds more, so
    the drain overshot LOOM_SHUTDOWN_TIMEOUT. The waits the worker asks for are counted,
    not timed."""
    state = MemoryState()
    started = asyncio.Event()

    async def endless(request: ModelRequest) -> ModelResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    real_wait = asyncio.wait
    waits: list[float] = []

    worker_module = SessionWorker.__module__

    async def counted(tasks: Any, *, timeout: float | None = None, **options: Any) -> Any:
        # The worker's own waits (a run unwinding its cancelled model call waits too).
        if timeout is not None and sys._getframe(1).f_globals["__name__"] == worker_module:
            waits.append(timeout)
        return await real_wait(tasks, timeout=timeout, **options)

    worker = SessionWorker(Agent(Model.function(endless)), broker, state, sweep_interval=NO_SWEEP)
    await worker.start()
    await queue_signal(state, broker, "ops")
    await asyncio.wait_for(started.wait(), 5)
    monkeypatch.setattr(asyncio, "wait", counted)
    await worker.stop(timeout=1.0)
    monkeypatch.undo()
    assert len(waits) == 2  # the runs, then their hand-back
    assert sum(waits) <= 1.0
    assert await notices(broker) == ["ops"]  # handed back all the same
