"""Scheduling across real processes on RabbitMQ and Redis: a burst put off by a debounce
becomes one run, even when the worker that would have started it is killed meanwhile (the
delay lives in the state, not in a process)."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from loom import RuntimeSignal
from loom.wire import publish_signal
from tests.integration.conftest import Cluster
from tests.polling import eventually

SCHEDULE = json.dumps({"debounce": 3, "max_wait": 10})


@pytest.mark.timeout(180)
async def test_a_debounced_burst_is_one_run_even_if_its_worker_dies(cluster: Cluster) -> None:
    settings = {"LOOM_ATTENTION_SCHEDULE": SCHEDULE}
    _, first = await cluster.start_ready("attention", "worker", **settings)
    burst = [RuntimeSignal.create(f"line {i} of a burst", session_id="ops") for i in range(5)]
    for sent in burst:
        await publish_signal(cluster.broker, sent)

    async def all_pending() -> bool:
        return len(await cluster.state.pending("ops")) == len(burst)

    await eventually(all_pending, "the burst to be decided", timeout=30)
    first.popen.send_signal(signal.SIGKILL)  # before the debounce lets the run start
    await asyncio.to_thread(first.popen.wait, 10)
    snapshot = await cluster.state.sessions.load("ops")
    assert snapshot is None or not snapshot.runs  # nothing ran yet

    await cluster.start_ready("worker", **settings)

    async def ran() -> object:
        snapshot = await cluster.state.sessions.load("ops")
        return snapshot is not None and snapshot.runs

    await eventually(ran, "the put-off run", timeout=60)
    await asyncio.sleep(4)  # room for a second run, which must not come
    snapshot = await cluster.state.sessions.load("ops")
    assert snapshot is not None
    (run,) = snapshot.runs
    assert run.status == "completed"
    assert sorted(run.metadata["signals"]) == sorted(s.id for s in burst)
