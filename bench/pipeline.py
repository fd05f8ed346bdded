"""Daemon pipeline throughput and latency on real RabbitMQ and Redis.

Prints figures; asserts nothing. Run: ``uv run python bench/pipeline.py [--n 2000]``.
Everything runs in one process on one event loop (publisher, daemon roles, hooks), under a
fresh namespace whose queues, exchanges and Redis keys are deleted at the end.

1. bare ceiling: aio-pika alone with the daemon's guarantees (persistent, mandatory,
   publisher confirms, quorum queue, manual acks, prefetch 64), published in gathers of 50;
2. observe path: low-urgency signals through ``publish_signal`` to the recorded decision
   (attention role only); target at least 60% of the bare rate. The two alternate for
   ``--rounds`` rounds and the figure is the median of the rounds' ratios. Repeated with
   every signal in one session (``--no-observe-one-session`` skips it);
3. queue path: normal signals over 50 sessions to completed runs (attention + worker,
   ``Model.test()``), the Redis commands and round trips per run counted in this process
   (``bench/helpers/redis_counts.py``; target at most 6 commands per run); against Celery's
   no-op tasks (``bench/helpers/celery_noop.py``, a solo worker in a subprocess on the same
   RabbitMQ) in
   ``--queue-rounds`` interleaved rounds, the ratio of the rounds' medians (target at least
   0.5 runs/s per task/s). Celery is the optional ``bench`` extra
   (``uv sync --extra bench``); without it that comparison is skipped, saying so;
4. latency: publish to run start at a steady 100 signals/s, one session per signal;
   target p99 at most 25 ms.

``--profile observe|queue|latency`` runs that phase under cProfile and prints the top costs.
cProfile slows the process several times over, so the profiled phase's own figure is not
comparable (under ``--profile latency`` the daemon falls behind 100/s and latency balloons).
Services: ``LOOM_BENCH_RABBITMQ_URL`` (default amqp://guest:guest@127.0.0.1:5672/) and
``LOOM_BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import os
import pstats
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aio_pika
from helpers.redis_counts import RedisCounts, counting  # bench/helpers
from redis.asyncio import Redis

from loom import Agent, Model
from loom.broker.rabbitmq import RabbitMQBroker
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.signals import RuntimeSignal
from loom.wire import TOPOLOGY, publish_signal

RABBITMQ_URL = os.environ.get("LOOM_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("LOOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_START = "rabbitmq-server -detached && rabbitmqctl await_startup"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'

BATCH = 50
"""Publishes in flight at once (one asyncio.gather)."""
PREFETCH = 64
"""The attention consumer's prefetch (AttentionConsumer.start)."""
PHASE_TIMEOUT = 60.0


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _signal(i: int, *, urgency: str, session: str, tag: str) -> RuntimeSignal:
    return RuntimeSignal.create(
        f"bench {tag} event {i}: disk usage at {40 + i % 50}% on host-{i % 7}",
        source="bench",
        type=tag,
        urgency=urgency,  # type: ignore[arg-type]
        session_id=session,
        payload={"host": f"host-{i % 7}", "seq": i},
    )


async def _publish_batched(publish: Callable[[int], Awaitable[None]], n: int) -> None:
    for start in range(0, n, BATCH):
        await asyncio.gather(*(publish(i) for i in range(start, min(start + BATCH, n))))


@contextlib.asynccontextmanager
async def _profiled(enabled: bool, label: str) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        for sort in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(28)
            print(f"\n--- cProfile of {label}, by {sort} ---")
            print("\n".join(out.getvalue().splitlines()[4:]))


# -- 1. bare ceiling -----------------------------------------------------------------------


async def bare_ceiling(ns: str, n: int) -> float:
    """Messages/second of aio-pika alone, with the daemon's delivery guarantees."""
    body = _signal(0, urgency="low", session="bare", tag="bare").model_dump_json().encode()
    connection = await aio_pika.connect_robust(RABBITMQ_URL)
    try:
        publisher = await connection.channel(on_return_raises=True)  # confirms on by default
        consumer = await connection.channel(publisher_confirms=False)
        await consumer.set_qos(prefetch_count=PREFETCH)
        exchange = await publisher.declare_exchange(f"{ns}.bare", "topic", durable=True)
        queue = await publisher.declare_queue(
            f"{ns}.bare", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, "#")
        consumer_queue = await consumer.declare_queue(
            f"{ns}.bare", durable=True, arguments={"x-queue-type": "quorum"}
        )
        received, target = 0, 200
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received >= target:
                done.set()

        async def publish(i: int) -> None:
            message = aio_pika.Message(
                body, message_id=uuid.uuid4().hex, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await exchange.publish(message, "bench.bare", mandatory=True)

        tag = await consumer_queue.consume(on_message)
        await _publish_batched(publish, target)  # warm-up
        await asyncio.wait_for(done.wait(), PHASE_TIMEOUT)
        received, target = 0, n
        done.clear()
        start = time.perf_counter()
        await _publish_batched(publish, n)
        await asyncio.wait_for(done.wait(), PHASE_TIMEOUT)
        elapsed = time.perf_counter() - start
        await consumer_queue.cancel(tag)
        await publisher.queue_delete(f"{ns}.bare")
        await publisher.exchange_delete(f"{ns}.bare")
    finally:
        await connection.close()
    return n / elapsed


# -- the daemon ------------------------------------------------------------------------------


def _daemon(ns: str) -> Daemon:
    settings = Settings(broker_url=RABBITMQ_URL, state_url=REDIS_URL, namespace=ns, model="test")
    return Daemon(Agent(Model.test(), "You are terse."), settings=settings)


async def _stopped(daemon: Daemon) -> None:
    with contextlib.suppress(Exception):
        await daemon.stop()


# -- 2. observe path -------------------------------------------------------------------------


async def observe_path(ns: str, n: int, sessions: int, profile: bool) -> float:
    """Low-urgency signals, publish to the recorded decision (attention role only)."""
    daemon = _daemon(ns)
    decided = 0
    done = asyncio.Event()
    target = n

    def on_decided(**event: Any) -> None:
        nonlocal decided
        decided += 1
        if decided >= target:
            done.set()

    daemon.agent.on("signal_decided", on_decided)
    await daemon.start(["attention"])
    try:
        warm = [_signal(i, urgency="low", session=f"obs-warm-{i % 10}", tag="observe")
                for i in range(100)]  # fmt: skip
        target = len(warm)
        await _publish_batched(lambda i: publish_signal(daemon.broker, warm[i]), len(warm))
        await asyncio.wait_for(done.wait(), PHASE_TIMEOUT)
        decided, target = 0, n
        done.clear()
        signals = [
            _signal(i, urgency="low", session=f"obs-{sessions}-{i % sessions}", tag="observe")
            for i in range(n)
        ]
        async with _profiled(profile, f"observe path ({sessions} sessions)"):
            start = time.perf_counter()
            await _publish_batched(lambda i: publish_signal(daemon.broker, signals[i]), n)
            await asyncio.wait_for(done.wait(), PHASE_TIMEOUT)
            elapsed = time.perf_counter() - start
    finally:
        await _stopped(daemon)
    return n / elapsed


# -- 3. queue path ---------------------------------------------------------------------------


async def queue_path(
    ns: str, n: int, sessions: int, profile: bool, counts: RedisCounts | None = None
) -> tuple[float, float, int, RedisCounts | None]:
    """Normal signals over ``sessions`` sessions to completed runs (attention + worker);
    with ``counts`` (``counting()``), also the Redis traffic of the measured part."""
    daemon = _daemon(ns)
    runs: dict[str, list[str]] = {}
    handled: set[str] = set()
    completed = 0
    done = asyncio.Event()
    expected: set[str] = set()

    def before_run(*, run_id: str, context: dict[str, Any], **_: Any) -> None:
        runs[run_id] = list(context.get("signals", ()))

    def after_run(*, run_id: str, result: dict[str, Any], **_: Any) -> None:
        nonlocal completed
        if result.get("status") != "completed":
            return
        completed += 1
        handled.update(runs.pop(run_id, ()))
        if expected and expected <= handled:
            done.set()

    daemon.agent.on("before_run", before_run)
    daemon.agent.on("after_run", after_run)
    await daemon.start(["attention", "worker"])
    try:
        warm = [_signal(i, urgency="normal", session=f"q-warm-{i % 10}", tag="queue")
                for i in range(100)]  # fmt: skip
        expected = {s.id for s in warm}
        await _publish_batched(lambda i: publish_signal(daemon.broker, warm[i]), len(warm))
        await asyncio.wait_for(done.wait(), PHASE_TIMEOUT)
        signals = [
            _signal(i, urgency="normal", session=f"q-{i % sessions}", tag="queue") for i in range(n)
        ]
        completed = 0
        done.clear()
        expected = {s.id for s in signals}
        before = counts.snapshot() if counts is not None else None
        async with _profiled(profile, "queue path"):
            start = time.perf_counter()
            await _publish_batched(lambda i: publish_signal(daemon.broker, signals[i]), n)
            await asyncio.wait_for(done.wait(), PHASE_TIMEOUT)
            elapsed = time.perf_counter() - start
        used = counts.since(before) if counts is not None and before is not None else None
    finally:
        await _stopped(daemon)
    return n / elapsed, completed / elapsed, completed, used


# -- 3b. Celery's no-op tasks on the same broker ----------------------------------------------


class CeleryRounds:
    """A solo Celery worker in a subprocess on a queue of this namespace; ``round(n)``
    sends ``n`` no-op tasks and a last one, and answers tasks/s once the last has run."""

    def __init__(self, ns: str) -> None:
        self.queue = f"{ns}.celery"
        os.environ["LOOM_BENCH_CELERY_QUEUE"] = self.queue
        os.environ.setdefault("LOOM_BENCH_RABBITMQ_URL", RABBITMQ_URL)
        from helpers import celery_noop  # bench/, the script's folder, is on the path

        self.tasks = celery_noop
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
        env = {**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_noop", "worker", "--pool=solo",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", self.queue,
             "--loglevel=WARNING"],
            env=env, cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _round(self, n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            self.tasks.noop.apply_async((i,))
        self.tasks.last.apply_async((n,)).get(timeout=PHASE_TIMEOUT)
        return n / (time.perf_counter() - start)

    async def round(self, n: int) -> float:
        return await asyncio.to_thread(self._round, n)

    def close(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(10)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()
        with contextlib.suppress(Exception), self.tasks.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(self.queue)
        self.tasks.app.close()


def celery_rounds(ns: str) -> CeleryRounds | None:
    try:
        import celery  # noqa: F401
    except ImportError:
        return None
    return CeleryRounds(ns)


# -- 4. latency ------------------------------------------------------------------------------


async def latency(ns: str, rate: float, count: int, profile: bool) -> list[float]:
    """Seconds from just before ``publish_signal`` to the run's start, one session each."""
    daemon = _daemon(ns)
    published: dict[str, float] = {}
    started: dict[str, float] = {}
    done = asyncio.Event()
    expected = 0

    def before_run(*, context: dict[str, Any], **_: Any) -> None:
        now = time.perf_counter()
        for signal_id in context.get("signals", ()):
            started.setdefault(signal_id, now)
        if len(started) >= expected:
            done.set()

    daemon.agent.on("before_run", before_run)
    await daemon.start(["attention", "worker"])
    tasks: set[asyncio.Task[None]] = set()

    async def steady(prefix: str, total: int) -> None:
        nonlocal expected
        expected = len(started) + total
        done.clear()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(total):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            signal = _signal(i, urgency="normal", session=f"{prefix}-{i}", tag="latency")
            published[signal.id] = time.perf_counter()
            task = asyncio.create_task(publish_signal(daemon.broker, signal))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.wait_for(done.wait(), PHASE_TIMEOUT)

    try:
        await steady("lat-warm", 100)
        measured_from = len(started)
        async with _profiled(profile, f"latency ({rate:g}/s)"):
            await steady("lat", count)
    finally:
        await _stopped(daemon)
    ids = [sid for sid in published if sid in started][measured_from:]
    return [started[sid] - published[sid] for sid in ids]


async def queue_phase(ns: str, n: int, args: argparse.Namespace) -> None:
    """The queue path, its Redis traffic, and Celery's no-op rate in interleaved rounds."""
    rounds = max(1, args.queue_rounds)
    celery = celery_rounds(ns) if args.celery else None
    loom_runs: list[float] = []
    loom_signals: list[float] = []
    tasks: list[float] = []
    total = RedisCounts()
    runs_total = 0
    try:
        if celery is not None:
            await celery.round(200)  # warm-up (and waits for the worker to be up)
        with counting() as counts:
            for round_ in range(rounds):
                if celery is not None:
                    tasks.append(await celery.round(n))
                profile = args.profile == "queue" and round_ == 0
                signals_s, runs_s, runs, used = await queue_path(ns, n, 50, profile, counts)
                loom_signals.append(signals_s)
                loom_runs.append(runs_s)
                runs_total += runs
                if used is not None:
                    total.commands.update(used.commands)
                    total.round_trips += used.round_trips
    finally:
        if celery is not None:
            celery.close()
    _line(
        "3. queue path (50 sessions) signals",
        f"{statistics.median(loom_signals):,.0f} sig/s",
        f"median of {rounds}: {_spread(loom_signals, '{:,.0f}')}",
    )
    _line(
        "   queue path runs",
        f"{statistics.median(loom_runs):,.0f} runs/s",
        f"{runs_total} runs, {rounds * n / max(runs_total, 1):.1f} signals/run",
    )
    per_run = max(runs_total, 1)
    _line(
        "   Redis commands per run",
        f"{total.total / per_run:.2f}",
        f"(target <= 6), round trips per run {total.round_trips / per_run:.2f}",
    )
    print(f"   by command, per run: {total.per(per_run, top=40)}")
    if celery is None:
        print("   Celery comparison skipped: celery is not installed (uv sync --extra bench)")
        return
    ratio = statistics.median(loom_runs) / statistics.median(tasks)
    _line(
        "   Celery no-op tasks (solo worker)",
        f"{statistics.median(tasks):,.0f} tasks/s",
        f"median of {rounds}: {_spread(tasks, '{:,.0f}')}",
    )
    per_round = [r / t for r, t in zip(loom_runs, tasks, strict=True)]
    _line(
        "   queue runs/s / Celery tasks/s",
        f"{ratio:.2f}",
        f"(target >= 0.5) per round: {_spread(per_round, '{:.2f}')}",
    )
    sig_ratio = statistics.median(loom_signals) / statistics.median(tasks)
    _line("   queue signals/s / Celery tasks/s", f"{sig_ratio:.2f}")


# -- teardown and main -----------------------------------------------------------------------


async def teardown(ns: str) -> None:
    broker = RabbitMQBroker(RABBITMQ_URL, topology=TOPOLOGY, namespace=ns)
    try:
        await broker.start()
        await broker.delete_topology()
    finally:
        await broker.close()
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{ns}:loom*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


def _spread(values: list[float], style: str) -> str:
    return ", ".join(style.format(v) for v in values)


def _line(label: str, value: str, target: str = "") -> None:
    print(f"{label:<44} {value:>22}   {target}")


async def main(args: argparse.Namespace) -> int:
    if not reachable(RABBITMQ_URL, 5672) or not reachable(REDIS_URL, 6379):
        print("RabbitMQ and Redis must both be reachable for this benchmark.", file=sys.stderr)
        print(f"  RabbitMQ ({RABBITMQ_URL.split('@')[-1]}): {RABBITMQ_START}", file=sys.stderr)
        print(f"  Redis ({REDIS_URL}): {REDIS_START}", file=sys.stderr)
        return 1
    ns = f"bench-{uuid.uuid4().hex[:10]}"
    n = args.n
    # Tasks that died with an unretrieved exception (e.g. interrupt watchers whose Redis
    # connection is closed at shutdown) are counted and summarised instead of dumped.
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        task = context.get("future")
        if isinstance(task, asyncio.Task) and context.get("exception") is not None:
            where = getattr(task.get_coro(), "__qualname__", task.get_name())
            unretrieved.append(f"{where}: {context['exception']!r}")
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_loop_error)
    print(f"loom pipeline benchmark: namespace {ns}, N={n}, publish gathers of {BATCH}")
    try:
        # The ceiling and the observe path alternate, round after round, and each round's
        # ratio is taken: on a shared machine the bare rate alone swings by half.
        if args.only_queue:
            await queue_phase(ns, n, args)
            return 0
        bares, observes = [], []
        for round_ in range(args.rounds):
            bares.append(await bare_ceiling(ns, n))
            profile = args.profile == "observe" and round_ == 0
            observes.append(await observe_path(ns, n, args.sessions, profile))
        ratios = [o / b for o, b in zip(observes, bares, strict=True)]
        _line(
            "1. bare aio-pika publish+consume",
            f"{statistics.median(bares):,.0f} msg/s",
            f"(ceiling) median of {args.rounds}: {_spread(bares, '{:,.0f}')}",
        )
        _line(
            f"2. observe path ({args.sessions} sessions)",
            f"{statistics.median(observes):,.0f} sig/s",
            f"median of {args.rounds}: {_spread(observes, '{:,.0f}')}",
        )
        _line(
            "   observe / bare, per round",
            f"{statistics.median(ratios):.0%}",
            f"median (target >= 60%): {_spread(ratios, '{:.0%}')}",
        )
        if args.observe_one_session:
            one = await observe_path(ns, n, 1, False)
            share = one / statistics.median(bares)
            _line("   observe path (1 session)", f"{one:,.0f} sig/s", f"{share:.0%} of bare")
        await queue_phase(ns, n, args)
        samples = await latency(ns, args.rate, args.latency_count, args.profile == "latency")
        if samples:
            p50, p99 = _pct(samples, 0.50) * 1e3, _pct(samples, 0.99) * 1e3
            mean = statistics.fmean(samples) * 1e3
            _line(
                f"4. publish -> run start @ {args.rate:g}/s p50",
                f"{p50:.1f} ms",
                f"mean {mean:.1f} ms, max {max(samples) * 1e3:.1f} ms",
            )
            _line("   publish -> run start p99", f"{p99:.1f} ms", "(target <= 25 ms)")
            _line("   runs measured", f"{len(samples)}", f"of {args.latency_count}")
    finally:
        await teardown(ns)
        gc.collect()
        if unretrieved:
            first = unretrieved[0]
            print(
                f"note: {len(unretrieved)} task(s) died with unretrieved exceptions, e.g. {first}"
            )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per throughput phase")
    parser.add_argument("--sessions", type=int, default=50, help="sessions of the observe path")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of the ceiling and observe path"
    )
    parser.add_argument(
        "--observe-one-session",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the observe path with every signal in one session",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="latency phase signals/s")
    parser.add_argument("--latency-count", type=int, default=1000)
    parser.add_argument("--profile", choices=("observe", "queue", "latency"))
    parser.add_argument(
        "--queue-rounds", type=int, default=3, help="interleaved rounds of queue path and Celery"
    )
    parser.add_argument(
        "--celery",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare the queue path with Celery no-op tasks (needs the bench extra)",
    )
    parser.add_argument(
        "--only-queue", action="store_true", help="run only the queue path and Celery phase"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
