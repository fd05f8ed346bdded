"""The attention role decides signals in batches: at once when idle, grown under load."""

from __future__ import annotations

import asyncio

import pytest

from loom import RuntimeSignal
from loom.broker.memory import MemoryBroker
from loom.daemon import attention
from loom.daemon.attention import AttentionConsumer
from loom.policies.attention import AttentionPolicy
from loom.state.memory_state import MemoryState
from loom.wire import TOPOLOGY


class Recording(AttentionConsumer):
    """Records each batch; the first batch can be held back to build up a backlog."""

    def __init__(self) -> None:
        super().__init__(MemoryBroker(topology=TOPOLOGY), MemoryState(), AttentionPolicy.default())
        self.batches: list[list[str]] = []
        self.hold_first = asyncio.Event()
        self.hold_first.set()
        self.deciding = asyncio.Event()
        self.lingering = asyncio.Event()
        self.lingered = 0

    async def decide_many(self, signals, *, traces=None):  # type: ignore[no-untyped-def]
        self.batches.append([s.summary for s in signals])
        self.deciding.set()
        if len(self.batches) == 1:
            await self.hold_first.wait()
        return await super().decide_many(signals, traces=traces)

    async def _linger(self) -> None:
        self.lingered += 1
        self.lingering.set()
        await super()._linger()


def low(name: str) -> RuntimeSignal:
    return RuntimeSignal.create(name, urgency="low", session_id="s")


async def test_an_idle_role_decides_a_lone_signal_at_once() -> None:
    consumer = Recording()
    assert await consumer._in_batch(low("a"), {}) == "observe"
    assert await consumer._in_batch(low("b"), {}) == "observe"
    assert consumer.batches == [["a"], ["b"]]
    assert consumer.lingered == 0


async def test_under_load_a_batch_waits_for_the_signals_still_coming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Long steps, so the test's own pace cannot end the wait; the wait ends when a step
    # passes with nothing new.
    monkeypatch.setattr(attention, "LINGER_STEP", 0.05)
    consumer = Recording()
    consumer.max_linger = 5.0
    consumer.hold_first.clear()
    first = asyncio.create_task(consumer._in_batch(low("first"), {}))
    await consumer.deciding.wait()  # the first batch is being decided (and held)
    backlog = [asyncio.create_task(consumer._in_batch(low(f"b{i}"), {})) for i in range(3)]
    await asyncio.sleep(0)
    consumer.hold_first.set()  # signals came in meanwhile: the role is under load
    async with asyncio.timeout(10):
        await consumer.lingering.wait()
    late = [asyncio.create_task(consumer._in_batch(low(f"late{i}"), {})) for i in range(2)]
    await asyncio.sleep(0)
    later = asyncio.create_task(consumer._in_batch(low("later"), {}))
    assert await asyncio.gather(first, *backlog, *late, later) == ["observe"] * 7
    assert consumer.batches == [["first"], ["b0", "b1", "b2", "late0", "late1", "later"]]
    assert len(await consumer.state.pending("s")) == 7


async def test_a_batch_stops_waiting_at_max_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention, "LINGER_STEP", 0.05)
    consumer = Recording()
    consumer.max_linger = 60.0
    consumer.max_batch = 4
    consumer.hold_first.clear()
    first = asyncio.create_task(consumer._in_batch(low("first"), {}))
    await consumer.deciding.wait()
    waiting = [asyncio.create_task(consumer._in_batch(low(f"w{i}"), {})) for i in range(5)]
    await asyncio.sleep(0)
    consumer.hold_first.set()
    async with asyncio.timeout(10):  # far below max_linger: the full batch does not wait
        await asyncio.gather(first, *waiting)
    assert consumer.batches == [["first"], ["w0", "w1", "w2", "w3"], ["w4"]]
