"""Three ``loom scheduler`` processes on the real RabbitMQ and Redis fire each scheduled time
exactly once, also one whose claim a dead replica left behind, and publish one heartbeat
per tick.

Every replica schedules every job; the shared claims in Redis let one of them publish, and
the others watch until it is recorded as done (or take it over when the claim lapses). The
test reads what was published straight off the attention queue (no attention role runs), so
it sees every duplicate the dedupe in the attention role would otherwise hide.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from loom import RuntimeSignal
from loom.adapters.cron import fire_key
from loom.broker.base import Delivery
from loom.wire import ATTENTION_QUEUE
from tests.integration.conftest import Cluster

CRON = [
    {
        "expression": "* * * * * *",  # every second
        "summary": "replica test tick",
        "job_id": "tick",
        "session_id": "cron-it",
        "coalesce": False,  # a replica that wakes late still fires each second it missed
        "misfire_grace_time": 30,
    }
]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_three_schedulers_fire_each_time_exactly_once(cluster: Cluster) -> None:
    published: list[RuntimeSignal] = []

    async def collect(delivery: Delivery) -> None:
        published.append(RuntimeSignal.model_validate_json(delivery.body))
        await delivery.ack()

    tag = await cluster.broker.consume(ATTENTION_QUEUE, collect)
    procs = await cluster.start_ready(
        "scheduler", "scheduler", "scheduler",
        LOOM_CRON=json.dumps(CRON), LOOM_HEARTBEAT__INTERVAL="1",
    )  # fmt: skip

    def fire_times() -> list[str]:
        return [s.payload["fire_time"] for s in published if s.source == "cron"]

    # Five more seconds of fires with all three replicas up.
    wanted = len(set(fire_times())) + 5
    async with asyncio.timeout(60):
        while len(set(fire_times())) < wanted:  # noqa: ASYNC110 - polls what was consumed
            await asyncio.sleep(0.1)
    # A replica that won a claim and died before the broker confirmed: its claim on a fire
    # soon due lapses 3 s after that fire, never recorded as done. The live replicas watch
    # the fire and one of them publishes it, within the grace time.
    now = datetime.now(UTC)
    orphan = now.replace(microsecond=0) + timedelta(seconds=3)
    lapse = (orphan - now).total_seconds() + 3
    assert await cluster.state.claim(fire_key("tick", orphan), "dead-replica", lapse) is None
    async with asyncio.timeout(60):
        while orphan.isoformat() not in fire_times():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    for proc in procs:
        assert proc.popen.poll() is None, proc.output()
        proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        assert await asyncio.to_thread(proc.popen.wait, 30) == 0, proc.output()
    # Everything they published is consumed before counting.
    async with asyncio.timeout(30):
        while await cluster.broker.queue_depth(ATTENTION_QUEUE):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await cluster.broker.cancel(tag, timeout=10)

    cron = [s for s in published if s.source == "cron"]
    repeated = [key for key, n in Counter(s.dedupe_key for s in cron).items() if n > 1]
    assert repeated == [], f"fired more than once: {repeated}"
    # No second skipped between the first and the last fire.
    seconds = sorted(datetime.fromisoformat(t) for t in fire_times())
    expected = [seconds[0] + timedelta(seconds=n) for n in range(len(seconds))]
    assert seconds == expected
    assert {(s.type, s.session_id, s.summary) for s in cron} == {
        ("schedule", "cron-it", "replica test tick")
    }
    # Each fire was published by exactly one process: each logs the fires it published.
    fired = {p.name: p.output().count("cron job tick fired for") for p in procs}
    assert sum(fired.values()) == len(cron), fired
    assert orphan.isoformat() in fire_times()
    taken_over = f"the claim of the fire at {orphan.isoformat()} lapsed"
    assert any(taken_over in p.output() for p in procs), "no replica took the orphan over"
    print(f"{len(cron)} fires published by {fired}")

    beats = [s for s in published if s.type == "heartbeat"]
    assert beats, "no heartbeat"
    assert [k for k, n in Counter(s.dedupe_key for s in beats).items() if n > 1] == []
    assert all(s.payload["broker"] and s.payload["state"] for s in beats)
