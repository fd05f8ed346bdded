"""Soak: many signals to many sessions on real RabbitMQ and Redis; is everything bounded?

Prints figures; asserts nothing. Run: ``uv run python bench/soak.py [--signals 300000]
[--sessions 1000] [--every 50000]``. One process runs the attention role and a worker on
one event loop (``Model.test()``), under a fresh namespace whose queues, exchanges and
Redis keys are deleted at the end. Signals are published in steps of ``--every``; after
each step, once every signal of it is decided and answered by a completed run, it prints:

- signals decided (all of them must be) and runs;
- the process's RSS, and its change since the first step (the warm-up);
- the namespace's Redis memory: the sum of ``MEMORY USAGE`` over its keys (exact for this
  namespace on a shared server), per session and with the signals' redelivery claims
  (``recorded:*`` hashes, and ``dedupe:signal-recorded:*`` keys before them, kept the
  claim TTL) apart, plus the server's
  ``used_memory`` for reference (blurred by anyone else using the server); with
  ``--breakdown``, the same memory by key kind (key names with ids taken out);
- CPU seconds of this process per run in the step, and the share of the step's history
  loads that found the session's transcript held parsed (``HeldHistories``);
- the work notices still queued once every signal of the step was handled: notices for
  sessions whose signals a run already took, left for the worker to drop.

Services as bench/pipeline.py (``LOOM_BENCH_RABBITMQ_URL``, ``LOOM_BENCH_REDIS_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import resource
import sys
import time
import uuid
from typing import Any

from pipeline import RABBITMQ_URL, REDIS_URL, _publish_batched, reachable, teardown
from redis.asyncio import Redis

from loom import Agent, Model
from loom.daemon.app import Daemon, settle_heap
from loom.daemon.settings import Settings
from loom.signals import RuntimeSignal
from loom.wire import WORK_QUEUE, publish_signal

STEP_TIMEOUT = 1800.0


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def held_loads(daemon: Daemon) -> tuple[int, int]:
    """(hits, misses) of the worker's held transcripts so far (``HeldHistories``)."""
    held = getattr(daemon.state.sessions, "held", None)
    return (0, 0) if held is None else (held.hits, held.misses)


def key_kind(key: bytes, ns: str) -> str:
    """A key's kind: its name with the namespace, session ids and other ids taken out."""
    name = key.decode(errors="replace").removeprefix(ns).lstrip(":")
    name = re.sub(r"\{[^}]*\}", "{sid}", name)
    name = re.sub(r"(^|:)signal-recorded:[^:]+", r"\1signal-recorded:*", name)
    name = re.sub(r"(^|:)recorded:[^:]+:[^:]+$", r"\1recorded:<bucket>:<shard>", name)
    return re.sub(r"(approval|marker|rate|dedupe:(?!signal)[^:]+):[^:]+$", r"\1:*", name)


async def namespace_bytes(
    client: Redis, ns: str, kinds: dict[str, list[int]] | None = None
) -> tuple[int, int, int]:
    """(bytes of every key of the namespace, bytes of its redelivery claims, key count).

    With ``kinds``, also adds up [keys, bytes] per key kind (see :func:`key_kind`).
    """
    total = claims = count = 0
    batch: list[bytes] = []

    async def measure(keys: list[bytes]) -> None:
        nonlocal total, claims
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
        for key, size in zip(keys, sizes, strict=True):
            total += size or 0
            if b":dedupe:signal-recorded:" in key or b":recorded:" in key:
                claims += size or 0
            if kinds is not None:
                kind = kinds.setdefault(key_kind(key, ns), [0, 0])
                kind[0] += 1
                kind[1] += size or 0

    async for key in client.scan_iter(match=f"{ns}:*", count=2000):
        batch.append(key)
        count += 1
        if len(batch) >= 2000:
            await measure(batch)
            batch = []
    if batch:
        await measure(batch)
    return total, claims, count


def print_kinds(kinds: dict[str, list[int]], sent: int, sessions: int) -> None:
    """The namespace's memory by key kind; per-session keys (``{sid}``) apart from the keys
    all sessions share (whose share per session shrinks as sessions are added)."""
    own = sum(size for kind, (_, size) in kinds.items() if "{sid}" in kind)
    shared = sum(size for kind, (_, size) in kinds.items() if "{sid}" not in kind)
    print(f"  by key kind after {sent:,} signals: per-session keys {own / sessions / 1024:.1f} "
          f"KB/session, shared keys {shared / 1024:.1f} KB in all")  # fmt: skip
    print(f"  {'kind':<46} {'keys':>8} {'KB':>10} {'KB/session':>10} {'B/key':>8}")
    for kind, (n, size) in sorted(kinds.items(), key=lambda item: -item[1][1]):
        print(
            f"  {kind:<46} {n:>8,} {size / 1024:>10.1f} "
            f"{size / sessions / 1024:>10.2f} {size / max(n, 1):>8.0f}"
        )


async def soak(args: argparse.Namespace) -> int:
    if not reachable(RABBITMQ_URL, 5672) or not reachable(REDIS_URL, 6379):
        print("RabbitMQ and Redis must both be reachable for this benchmark.", file=sys.stderr)
        return 1
    ns = f"soak-{uuid.uuid4().hex[:10]}"
    settings = Settings(broker_url=RABBITMQ_URL, state_url=REDIS_URL, namespace=ns, model="test")
    daemon = Daemon(Agent(Model.test(), "You are terse."), settings=settings)
    decided = 0
    handled = 0
    runs = 0
    runs_by: dict[str, int] = {}
    progress = asyncio.Event()

    def on_decided(**_: Any) -> None:
        nonlocal decided
        decided += 1

    def before_run(*, run_id: str, context: dict[str, Any], **_: Any) -> None:
        runs_by[run_id] = len(context.get("signals", ()))

    def after_run(*, run_id: str, result: dict[str, Any], **_: Any) -> None:
        nonlocal handled, runs
        count = runs_by.pop(run_id, 0)
        if result.get("status") == "completed":
            handled += count
            runs += 1
            progress.set()

    daemon.agent.on("signal_decided", on_decided)
    daemon.agent.on("before_run", before_run)
    daemon.agent.on("after_run", after_run)
    client = Redis.from_url(REDIS_URL)
    await daemon.start(["attention", "worker"])
    # A served role settles its heap once started (``Daemon.serve``): the soak measures
    # the process as it serves, unless asked for Python's default collector.
    settled = settle_heap() if args.gc == "served" else None
    print(f"loom soak: namespace {ns}, {args.signals:,} signals to {args.sessions:,} sessions")
    print(
        f"{'signals':>9} {'decided':>9} {'runs':>8} {'RSS MB':>8} {'RSS vs 1st':>10} "
        f"{'ns KB/session':>13} {'w/o claims':>10} {'keys':>8} {'used_memory MB':>14} "
        f"{'CPU ms/run':>10} {'held hits':>9} {'notices':>8} {'step s':>7}"
    )
    first_rss: float | None = None
    sent = 0
    try:
        while sent < args.signals:
            step = min(args.every, args.signals - sent)
            base = sent
            cpu0, runs0, t0 = cpu_seconds(), runs, time.perf_counter()
            loads0 = held_loads(daemon)

            def publish(i: int, base: int = base) -> Any:
                n = base + i
                signal = RuntimeSignal.create(
                    f"soak event {n}: disk usage at {40 + n % 50}% on host-{n % 7}",
                    source="soak",
                    type="disk",
                    urgency="normal",
                    session_id=f"s-{n % args.sessions}",
                    payload={"host": f"host-{n % 7}", "seq": n},
                )
                return publish_signal(daemon.broker, signal)

            await _publish_batched(publish, step)
            sent += step
            deadline = time.monotonic() + STEP_TIMEOUT
            while (decided < sent or handled < sent) and time.monotonic() < deadline:
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), 5.0)
            elapsed = time.perf_counter() - t0
            step_runs = runs - runs0
            cpu = (cpu_seconds() - cpu0) / max(step_runs, 1) * 1e3
            (hits, misses), (hits0, misses0) = held_loads(daemon), loads0
            hits, misses = hits - hits0, misses - misses0
            hit_rate = hits / max(hits + misses, 1)
            await asyncio.sleep(0)
            rss = rss_mb()
            first_rss = rss if first_rss is None else first_rss
            kinds: dict[str, list[int]] = {}
            total, claims, keys = await namespace_bytes(client, ns, kinds)
            used = int((await client.info("memory"))["used_memory"]) / 2**20
            notices = await daemon.broker.queue_depth(WORK_QUEUE)
            per = total / args.sessions / 1024
            per_without = (total - claims) / args.sessions / 1024
            print(
                f"{sent:>9,} {decided:>9,} {runs:>8,} {rss:>8.1f} "
                f"{(rss / first_rss - 1):>+10.1%} {per:>13.1f} {per_without:>10.1f} "
                f"{keys:>8,} {used:>14.1f} {cpu:>10.2f} {hit_rate:>9.1%} {notices:>8,} "
                f"{elapsed:>7.0f}",
                flush=True,
            )
            if args.breakdown:
                print_kinds(kinds, sent, args.sessions)
        print(f"every signal decided: {decided == sent} ({decided:,} of {sent:,}); "
              f"handled by completed runs: {handled:,}")  # fmt: skip
    finally:
        if settled is not None:
            gc.unfreeze()
            gc.set_threshold(*settled)
        try:
            await daemon.stop()
        finally:
            if not os.environ.get("LOOM_SOAK_KEEP"):
                await teardown(ns)
            await client.aclose()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=300_000)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50_000, help="signals per printed step")
    parser.add_argument(
        "--gc",
        choices=("served", "default"),
        default="served",
        help="the collector as a served role sets it (settle_heap), or Python's default",
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="print the memory by key kind at every step"
    )
    sys.exit(asyncio.run(soak(parser.parse_args())))
