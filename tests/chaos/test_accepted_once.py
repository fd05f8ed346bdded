"""Chaos: every signal the gateway answered 2xx reaches exactly one completed run, however
the workers, Redis and RabbitMQ fail underneath (issue 21, "nothing accepted is lost,
nothing runs twice").

A private Redis (AOF) and a private RabbitMQ node run under a gateway, an attention role and
three workers (``tests.integration.app``: a fake model). Signals go through ``POST
/signals`` over many sessions, each with its own callback address; while they flow, a
worker is killed (-9) three times (and replaced), Redis loses its primary (killed -9 and
restarted; or, with a Sentinel, killed and its replica promoted), Redis is frozen
(SIGSTOP) and thawed, and RabbitMQ is killed and restarted. The callbacks,
received here (outside Redis), count what was answered: accepted, lost, doubled, dead
letters and the time to settle are printed. Sizes come from ``LOOM_CHAOS_SIGNALS`` (default
300), ``LOOM_CHAOS_SESSIONS`` (30) and ``LOOM_CHAOS_OUTAGE`` (seconds each outage lasts, 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loom.broker.rabbitmq import RabbitMQBroker
from loom.wire import TOPOLOGY
from tests.integration.conftest import Cluster, Proc
from tests.private_rabbitmq import PrivateRabbitMQ
from tests.private_redis import PrivateRedis, PrivateSentinel

SIGNALS = int(os.environ.get("LOOM_CHAOS_SIGNALS", "300"))
SESSIONS = int(os.environ.get("LOOM_CHAOS_SESSIONS", "30"))
OUTAGE = float(os.environ.get("LOOM_CHAOS_OUTAGE", "5"))
TOKEN = "chaos-token-0123456789"
SETTLE_LIMIT = 120.0
SPAN = 4 * OUTAGE + 15
"""Seconds the signals are spread over: about as long as the faults take."""

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class Callbacks:
    """What the reply dispatcher delivered, by signal number: (run id, status) per POST."""

    received: dict[int, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))

    async def receive(self, request: Request) -> Response:
        number = int(request.path_params["number"])
        body = json.loads(await request.body())
        self.received[number].append((str(body["run_id"]), str(body["status"])))
        return Response(status_code=200)

    def completed(self, number: int) -> set[str]:
        return {run for run, status in self.received.get(number, ()) if status == "completed"}


@pytest.fixture
async def callbacks() -> AsyncIterator[tuple[Callbacks, int]]:
    received = Callbacks()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    app = Starlette(routes=[Route("/cb/{number:int}", received.receive, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve([listener]))
    yield received, listener.getsockname()[1]
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)


class ChaosRedis:
    """The Redis under test, and its faults: ``restart`` (one server with AOF: killed -9 and
    started again) or ``sentinel`` (a primary, a replica and a Sentinel: the primary killed,
    the replica promoted). Either is then frozen (SIGSTOP) and thawed."""

    def __init__(self, mode: str, directory: Path) -> None:
        self.mode = mode
        for part in ("primary", "replica", "sentinel"):
            (directory / part).mkdir(parents=True)
        self.primary = PrivateRedis(directory / "primary").start()
        self.servers = [self.primary]
        self.current = self.primary
        if mode == "sentinel":
            replica = PrivateRedis(
                directory / "replica", extra=("--replicaof", "127.0.0.1", str(self.primary.port))
            )
            self.servers.append(replica.start())
            watcher = PrivateSentinel(directory / "sentinel", self.primary, service="loom")
            self.servers.append(watcher.start())
            self.url = f"redis+sentinel://127.0.0.1:{watcher.port}/loom/0"
            self.replica = replica
        else:
            self.url = self.primary.url

    async def lose_the_primary(self) -> None:
        self.primary.kill()  # kill -9
        if self.mode == "sentinel":
            self.current = self.replica  # promoted after about a second
            return
        await asyncio.sleep(OUTAGE)  # down, then back with its AOF
        await asyncio.to_thread(self.primary.start)

    async def freeze(self) -> None:
        self.current.freeze()  # SIGSTOP: connections hang rather than fail
        await asyncio.sleep(OUTAGE)
        self.current.thaw()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(params=["restart", "sentinel"])
def services(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ChaosRedis, PrivateRabbitMQ]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = ChaosRedis(request.param, tmp_path / "redis")
    rabbit = PrivateRabbitMQ(tmp_path / "rabbitmq")
    try:
        rabbit.start()
        yield redis, rabbit
    finally:
        rabbit.stop()
        redis.stop()


async def send_all(gateway: Proc, callback_port: int, accepted: dict[int, float]) -> None:
    """POST every signal, spread over ``SPAN`` seconds (the faults' time), retrying a
    refusal (503) or a lost connection like a sender would, with the same dedupe key;
    ``accepted`` gets each number answered 2xx."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(SIGNALS):
        queue.put_nowait(number)
    start = time.monotonic()

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            number = queue.get_nowait()
            await asyncio.sleep(max(start + number * SPAN / SIGNALS - time.monotonic(), 0))
            signal_body = {
                "source": "chaos",
                "type": "event",
                "summary": f"chaos signal {number}",
                "session_id": f"s{number % SESSIONS}",
                "dedupe_key": f"chaos-{number}",
                "reply_to": f"http://127.0.0.1:{callback_port}/cb/{number}",
            }
            give_up = time.monotonic() + 120
            while time.monotonic() < give_up:
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.post("/signals", json=signal_body)
                    if answer.status_code in (200, 202):
                        accepted[number] = time.monotonic()
                        break
                await asyncio.sleep(0.3)

    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as client:
        await asyncio.gather(*(sender(client) for _ in range(4)))


async def faults(
    cluster: Cluster, workers: list[Proc], redis: ChaosRedis, rabbit: PrivateRabbitMQ
) -> float:
    """The faults, one after another while the signals flow; returns when the last ended."""

    async def kill_a_worker() -> None:
        victim = workers.pop(0)
        victim.popen.send_signal(signal.SIGKILL)
        workers.append(cluster.start("worker"))

    await asyncio.sleep(2)
    await kill_a_worker()
    await asyncio.sleep(2)
    await redis.lose_the_primary()
    await asyncio.sleep(3)
    await kill_a_worker()
    await redis.freeze()
    await asyncio.sleep(3)
    rabbit.kill()  # the broker restarts: its quorum queues come back from disk
    await asyncio.sleep(1)
    await asyncio.to_thread(rabbit.start)
    await asyncio.sleep(3)
    await kill_a_worker()
    return time.monotonic()


async def test_every_accepted_signal_is_answered_once_through_kills_and_outages(
    services: tuple[ChaosRedis, PrivateRabbitMQ],
    callbacks: tuple[Callbacks, int],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    redis, rabbit = services
    received, callback_port = callbacks
    namespace = f"chaos-{secrets.token_hex(4)}"
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(namespace, rabbit.url, redis.url, logs)
    cluster.defaults |= {
        "LOOM_API_TOKEN": TOKEN,
        "LOOM_WEBHOOKS__CALLBACK_ALLOW_PRIVATE": "true",
        "LOOM_REPLIES__RETRY_DELAY": "0.5",
        "LOOM_REPLIES__MAX_DELAY": "5",
        # A worker killed while it sends a reply holds that reply's claim until it expires;
        # a shorter claim (still above the callback timeout) settles sooner.
        "LOOM_REPLIES__CLAIM_TTL": "15",
    }
    request.node.loom_cluster = cluster
    try:
        [gateway, _] = await cluster.start_ready("gateway", "attention")
        workers = await cluster.start_ready("worker", "worker", "worker")
        accepted: dict[int, float] = {}
        started = time.monotonic()
        sending = asyncio.create_task(send_all(gateway, callback_port, accepted))
        faults_ended = await faults(cluster, workers, redis, rabbit)
        await sending
        load_ended = max(faults_ended, max(accepted.values(), default=started))

        deadline = time.monotonic() + SETTLE_LIMIT
        settled_at = deadline
        while time.monotonic() < deadline:
            if all(received.completed(number) for number in accepted):
                settled_at = time.monotonic()
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # room for a late duplicate to show
        settle = max(settled_at - load_ended, 0.0)

        broker = RabbitMQBroker(rabbit.url, topology=TOPOLOGY, namespace=namespace)
        await broker.start()
        try:
            dead = await broker.dead_letters(limit=10_000)
        finally:
            await broker.close()
    finally:
        cluster.kill_all()

    lost = sorted(n for n in accepted if not received.completed(n))
    doubled_runs = sorted(n for n in accepted if len(received.completed(n)) > 1)
    doubled_replies = sorted(n for n, got in received.received.items() if len(got) > 1)
    failed = sorted(
        n for n, got in received.received.items() if any(s != "completed" for _, s in got)
    )
    figures = (
        f"chaos ({redis.mode}): {SIGNALS} signals over {SESSIONS} sessions, 3 workers; "
        f"accepted {len(accepted)}, lost {len(lost)}, doubled runs {len(doubled_runs)}, "
        f"doubled replies {len(doubled_replies)}, failed {len(failed)}, "
        f"dead letters {len(dead)}, time to settle {settle:.1f}s after the last fault and "
        f"accept "
        f"(whole run {time.monotonic() - started:.0f}s)"
    )
    print(figures)
    if target := os.environ.get("LOOM_CHAOS_FIGURES"):  # CI keeps them for the summary
        await asyncio.to_thread(Path(target).write_text, figures + "\n")
    assert len(accepted) == SIGNALS, figures
    assert lost == [], figures
    assert doubled_runs == [], figures
    assert doubled_replies == [], figures
    assert failed == [], figures
    assert [d.reason for d in dead] == [], figures
