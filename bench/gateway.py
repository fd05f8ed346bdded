"""Gateway throughput and latency: ``POST /signals`` on RabbitMQ beside the bare publish rate.

Prints figures; asserts nothing. Run: ``uv run python bench/gateway.py [--n 5000] [--c 32]
[--rounds 3]``.

1. bare publish: aio-pika alone, persistent and publisher-confirmed into a quorum queue,
   ``--c`` publishes in flight at a time (what the gateway must do for each request), on
   uvloop's event loop like the gateway;
2. ``loom gateway`` in a subprocess (uvicorn, RabbitMQ broker, Redis state) under ``--c``
   concurrent HTTP clients (aiohttp, keep-alive) posting RuntimeSignals: accepted signals/s
   and the latency of each request (p50, p99), first without, then with a dedupe key (one
   Redis claim per request). The queue depth afterwards must equal the 202s: every signal
   the gateway accepted is on the broker.

The phases run in ``--rounds`` interleaved rounds (bare, then the gateway without and with
a dedupe key), so a machine that gets busier or quieter weighs on both sides; each round
prints its own ratio and the last line their median. The load generator (the HTTP clients)
runs in this process, not in the gateway's: the gateway's CPU is read from its own process
(Linux ``/proc``), the bare publisher's from this one while it publishes alone. The rates
share the machine (and on small machines the cores) with the load generator and RabbitMQ,
so the HTTP rates are a floor and swing from run to run; the CPU figures swing less: the
gateway process's CPU time per accepted signal beside this process's CPU time per bare
confirmed publish. Services: ``LOOM_BENCH_RABBITMQ_URL`` and ``LOOM_BENCH_REDIS_URL`` as in
bench/pipeline.py; everything lives in a fresh namespace that is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aio_pika
import aiohttp
import uvloop
from pipeline import (
    RABBITMQ_START,
    RABBITMQ_URL,
    REDIS_START,
    REDIS_URL,
    _line,
    _pct,
    reachable,
    teardown,
)

from loom.broker.rabbitmq import RabbitMQBroker
from loom.signals import RuntimeSignal
from loom.wire import ATTENTION_QUEUE, TOPOLOGY

ROOT = Path(__file__).resolve().parent.parent


def _body(i: int, tag: str, dedupe: bool) -> bytes:
    signal = RuntimeSignal.create(
        f"bench {tag} event {i}: disk usage at {40 + i % 50}% on host-{i % 7}",
        source="bench",
        type=tag,
        urgency="low",
        session_id=f"bench-{i % 50}",
        payload={"host": f"host-{i % 7}", "seq": i},
        dedupe_key=f"{tag}-{i}" if dedupe else None,
    )
    return signal.model_dump_json().encode()


def cpu_seconds(pid: int | None = None) -> float:
    """User and system CPU time of a process (this one when ``pid`` is None)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BARE_CPU: list[float] = []
"""CPU seconds per bare publish, as measured by ``bare_publish``."""


async def bare_publish(ns: str, n: int, concurrency: int) -> float:
    """Confirmed publishes/second of aio-pika alone, ``concurrency`` in flight."""
    body = _body(0, "bare", False)
    connection = await aio_pika.connect_robust(RABBITMQ_URL)
    try:
        channel = await connection.channel(on_return_raises=True)
        exchange = await channel.declare_exchange(f"{ns}.bare", "topic", durable=True)
        queue = await channel.declare_queue(
            f"{ns}.bare", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, "#")
        counter = iter(range(n))

        async def publisher() -> None:
            for _ in counter:
                message = aio_pika.Message(
                    body,
                    message_id=uuid.uuid4().hex,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await exchange.publish(message, "bench.bare", mandatory=True)

        await asyncio.gather(*(publisher() for _ in range(concurrency)))  # warm-up drains it
        counter = iter(range(n))
        start, cpu = time.perf_counter(), cpu_seconds()
        await asyncio.gather(*(publisher() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        BARE_CPU.append((cpu_seconds() - cpu) / n)
        await channel.queue_delete(f"{ns}.bare")
        await channel.exchange_delete(f"{ns}.bare")
    finally:
        await connection.close()
    return n / elapsed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_gateway(
    ns: str, port: int, prefix: Sequence[str] = ()
) -> asyncio.subprocess.Process:
    """``loom gateway`` in a subprocess (``prefix``: a command it runs under, e.g. valgrind),
    once it answers ``/readyz``."""
    env = {
        **os.environ,
        "LOOM_BROKER_URL": RABBITMQ_URL,
        "LOOM_STATE_URL": REDIS_URL,
        "LOOM_NAMESPACE": ns,
        "LOOM_MODEL": "test",
        "LOOM_HTTP__PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "loom", "gateway", cwd=ROOT, env=env,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    async with aiohttp.ClientSession() as client:
        for _ in range(1200):  # 60 s: a loaded machine starts it slowly
            if process.returncode is not None:
                error = (await process.stderr.read()).decode() if process.stderr else ""
                raise RuntimeError(f"loom gateway exited: {error}")
            try:
                async with client.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    process.terminate()
    raise RuntimeError("loom gateway did not become ready in 60 s")


async def post_signals(
    port: int, n: int, concurrency: int, tag: str, dedupe: bool
) -> tuple[float, list[float], Counter[int]]:
    """Accepted signals/s, per-request latencies and the count of each status code."""
    url = f"http://127.0.0.1:{port}/signals"
    bodies = [_body(i, tag, dedupe) for i in range(n)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:
        work = iter(bodies)

        async def sender() -> None:
            for body in work:
                began = time.perf_counter()
                async with client.post(url, data=body, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - began)
                statuses[response.status] += 1

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return statuses[202] / elapsed, latencies, statuses


async def queued(ns: str) -> int:
    broker = RabbitMQBroker(RABBITMQ_URL, topology=TOPOLOGY, namespace=ns)
    await broker.start()
    try:
        return await broker.queue_depth(ATTENTION_QUEUE)
    finally:
        await broker.close()


async def gateway_phase(
    gateway: asyncio.subprocess.Process, port: int, n: int, c: int, tag: str, dedupe: bool
) -> tuple[float, float, list[float], Counter[int]]:
    """Accepted signals/s, gateway CPU seconds per accepted signal, latencies, statuses."""
    assert gateway.pid is not None
    cpu = cpu_seconds(gateway.pid)
    rate, latencies, statuses = await post_signals(port, n, c, tag, dedupe)
    per_signal = (cpu_seconds(gateway.pid) - cpu) / max(statuses[202], 1)
    return rate, per_signal, latencies, statuses


async def main(args: argparse.Namespace) -> int:
    if not reachable(RABBITMQ_URL, 5672) or not reachable(REDIS_URL, 6379):
        print("RabbitMQ and Redis must both be reachable for this benchmark.", file=sys.stderr)
        print(f"  RabbitMQ: {RABBITMQ_START}\n  Redis: {REDIS_START}", file=sys.stderr)
        return 1
    ns = f"bench-{uuid.uuid4().hex[:10]}"
    n, c = args.n, args.c
    print(f"loom gateway benchmark: namespace {ns}, N={n}, {c} requests in flight, "
          f"{args.rounds} interleaved rounds")  # fmt: skip
    gateway: asyncio.subprocess.Process | None = None
    ratios: dict[bool, list[float]] = {False: [], True: []}
    try:
        port = _free_port()
        gateway = await start_gateway(ns, port)
        warmup = min(n, 500)
        await post_signals(port, warmup, c, "warmup", False)
        accepted_total = 0
        for round_ in range(1, args.rounds + 1):
            bare = await bare_publish(ns, n, c)
            bare_cpu = BARE_CPU[-1]
            _line(
                f"round {round_}: 1. bare aio-pika confirmed publish",
                f"{bare:,.0f} msg/s",
                f"{bare_cpu * 1e3:.3f} ms CPU each",
            )
            for label, dedupe in (("without dedupe key", False), ("with dedupe key", True)):
                tag = f"run{round_}-{dedupe}"
                rate, per_signal, latencies, statuses = await gateway_phase(
                    gateway, port, n, c, tag, dedupe
                )
                accepted_total += statuses[202]
                ratios[dedupe].append(bare_cpu / per_signal)
                _line(f"  2. POST /signals {label}", f"{rate:,.0f} sig/s",
                      f"{rate / bare:.0%} of bare")  # fmt: skip
                _line(
                    "     gateway CPU per signal",
                    f"{per_signal * 1e3:.3f} ms",
                    f"{bare_cpu / per_signal:.2f} of a bare publish's rate",
                )
                p50, p99 = _pct(latencies, 0.50) * 1e3, _pct(latencies, 0.99) * 1e3
                _line(
                    "     latency p50 / p99",
                    f"{p50:.1f} / {p99:.1f} ms",
                    f"max {max(latencies) * 1e3:.1f} ms",
                )
                _line("     responses", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
        depth = await queued(ns)
        verdict = "all on the broker" if depth == accepted_total + warmup else "MISMATCH"
        _line(
            "3. queue depth after the run",
            f"{depth:,}",
            f"{verdict} ({accepted_total + warmup} accepted)",
        )
        for dedupe, label in ((False, "without"), (True, "with")):
            _line(
                f"4. accepts / bare publishes (CPU), {label} dedupe key",
                f"{statistics.median(ratios[dedupe]):.2f} median",
                "rounds: " + ", ".join(f"{r:.2f}" for r in ratios[dedupe]),
            )
    finally:
        if gateway is not None:
            gateway.terminate()
            await asyncio.wait_for(gateway.wait(), 30)
        await teardown(ns)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="requests per phase")
    parser.add_argument("--c", type=int, default=32, help="requests (and publishes) in flight")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    arguments = parser.parse_args()
    # The event loop the gateway serves on (loom.daemon.cli.serve_forever): the bare
    # publisher gets the same, so the baseline is not slowed by a slower loop.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main(arguments)))
