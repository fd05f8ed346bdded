"""Two worker processes take turns on one session over Redis: the summary one writes is
reused and extended by the other, and the stored transcript is never rewritten."""

from __future__ import annotations

import asyncio
import signal

import pytest

from loom import RuntimeSignal
from loom.wire import publish_signal
from tests.integration.conftest import Cluster
from tests.polling import eventually

APP = "tests.integration.context_app:daemon"


async def run_one(c: Cluster, n: int) -> None:
    sent = RuntimeSignal.create(f"deploy {n} finished " + "d" * 200, session_id="ops")
    await publish_signal(c.broker, sent)

    async def handled() -> bool:
        snapshot = await c.state.sessions.load("ops")
        return snapshot is not None and any(
            r.status == "completed" and sent.id in r.metadata.get("signals", [])
            for r in snapshot.runs
        )

    await eventually(handled, timeout=30)


async def summary_text(c: Cluster) -> str:
    stored = await c.state.sessions.load_context("ops")
    return "" if stored is None or stored.summary is None else stored.summary.text


@pytest.mark.timeout(240)
async def test_a_summary_written_by_one_worker_is_reused_by_another(cluster: Cluster) -> None:
    attention = cluster.start("attention", app=APP)
    first = cluster.start("worker", app=APP)
    await cluster.wait_ready(attention)
    await cluster.wait_ready(first)
    n = 0
    while not await summary_text(cluster):
        assert n < 40, "no summary after 40 runs"
        await run_one(cluster, n)
        n += 1
    assert await summary_text(cluster) == f"[summary by {first.popen.pid}]"
    first.popen.send_signal(signal.SIGTERM)
    await asyncio.to_thread(first.popen.wait, 30)

    second = cluster.start("worker", app=APP)
    await cluster.wait_ready(second)
    while str(second.popen.pid) not in await summary_text(cluster):
        assert n < 80, "the second worker never extended the summary"
        await run_one(cluster, n)
        n += 1
    text = await summary_text(cluster)
    assert text == f"[summary by {first.popen.pid}] [summary by {second.popen.pid}]"
    snapshot = await cluster.state.sessions.load("ops")
    assert snapshot is not None
    workers = {r.metadata["worker"] for r in snapshot.runs}
    assert len(workers) == 2
    # Every run's messages are still there, in order, from the very first signal.
    assert len(snapshot.messages) == 2 * n
    assert snapshot.messages[0].content.startswith("Signals to handle:")
    assert "deploy 0 finished" in snapshot.messages[0].content
