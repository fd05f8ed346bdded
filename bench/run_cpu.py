"""CPU of one run on a session its store does not hold, long transcript against short, on Redis.

A worker whose sessions outnumber what its store holds parsed reads and parses a session's
whole stored transcript for each run (``RedisSessionStore.load_history``), then builds the
run's window and requests from it. How much of a run's CPU grows with the transcript is
what this measures: runs of ``Model.test()`` (the agent of bench/soak.py) on a session of
``--long`` stored messages and on one of ``--short``, in interleaved rounds in one process,
each run's session dropped from the store's held transcripts first. The transcripts are
those of real runs (``--long`` messages of them are made once, then stored anew before
each measured run, untimed).

Prints the median CPU ms per run of each, their ratio long ÷ short, and the CPU each
stored message adds to a run (µs). Asserts nothing. ``--daemon`` runs the agent as a
daemon sets it up (the session store of its Redis state; its feedback, metrics and tracing
hooks). ``--profile`` also prints where the long runs' CPU goes (cProfile, ``--sort``
order). Run: ``uv run python bench/run_cpu.py [--rounds 200] [--long 400] [--short 50]
[--daemon] [--profile]`` (``LOOM_BENCH_REDIS_URL``, default redis://127.0.0.1:6379/0; keys
under a fresh prefix, deleted at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import time
import uuid

import redis.asyncio as aioredis

from loom import Agent, Model
from loom.core.messages import Message
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings, StateSettings
from loom.runtime.config import SessionConfig
from loom.runtime.session import Session
from loom.state.redis_sessions import RedisSessionStore

REDIS_URL = os.environ.get("LOOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
INPUT = (
    "Signals to handle:\n- [webhook/alert] normal: disk usage on host-{i} above 80% "
    "(payload: mount /var, used 81%)"
)
"""About what a soak run is given (one signal)."""


async def run_once(agent: Agent, store: RedisSessionStore, session_id: str, i: int) -> float:
    """CPU seconds of this process for one run of ``session_id``, loaded from Redis."""
    store.held.drop(session_id)  # as if it had been dropped since its last run
    session = Session(agent, SessionConfig(id=session_id), store=store)
    began = time.process_time()
    result = await session.start(INPUT.format(i=i)).wait()
    spent = time.process_time() - began
    if not result.ok:
        raise RuntimeError(f"run of {session_id} ended {result.status.value}: {result.error}")
    return spent


async def transcript(agent: Agent, prefix: str, size: int) -> list[Message]:
    """``size`` messages of real runs (whole turns: they begin at a user message)."""
    store = RedisSessionStore(REDIS_URL, prefix=prefix, max_messages=size + 10)
    try:
        session = Session(agent, SessionConfig(id="seed"), store=store)
        for i in range(size + 10):
            snapshot = await store.load_history("seed")
            if snapshot is not None and len(snapshot.messages) >= size + 2:
                messages = snapshot.messages[-size:]
                if messages[0].role != "user":
                    raise RuntimeError("the seed transcript does not split at a user message")
                return messages
            result = await session.start(INPUT.format(i=i)).wait()
            if not result.ok:
                raise RuntimeError(f"seed run ended {result.status.value}: {result.error}")
        raise RuntimeError(f"{size + 10} seed runs left fewer than {size} messages")
    finally:
        await store.close()


async def store_anew(store: RedisSessionStore, session_id: str, messages: list[Message]) -> None:
    await store.delete(session_id)
    await store.append(session_id, messages=messages)


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench-runcpu-{uuid.uuid4().hex[:10]}"
    agent = Agent(Model.test(), "You are terse.")
    if args.daemon:
        kept = StateSettings(max_messages=max(args.long, args.short))
        settings = Settings(state_url=REDIS_URL, namespace=prefix, model="test", state=kept)
        daemon = Daemon(agent, settings=settings)
        store = daemon.state.sessions
    else:
        store = RedisSessionStore(REDIS_URL, prefix=prefix, max_messages=max(args.long, args.short))
    profiler = cProfile.Profile() if args.profile else None
    try:
        seed = await transcript(agent, prefix, args.long)
        sizes = {"long": args.long, "short": args.short}
        spent: dict[str, list[float]] = {"long": [], "short": []}
        for i in range(args.warmup + args.rounds):
            order = ("long", "short") if i % 2 else ("short", "long")
            for kind in order:
                await store_anew(store, kind, seed[-sizes[kind] :])
                if profiler is not None and kind == "long":
                    profiler.enable()
                cpu = await run_once(agent, store, kind, i)
                if profiler is not None and kind == "long":
                    profiler.disable()
                if i >= args.warmup:
                    spent[kind].append(cpu)
        long, short = (statistics.median(spent[kind]) * 1e3 for kind in ("long", "short"))
        per_message = (long - short) / (args.long - args.short) * 1e3
        print(f"loom run CPU, session not held (Redis, Model.test()), {args.rounds} rounds")
        print(f"  {args.long:>4} messages: {long:7.3f} ms CPU per run (median)")
        print(f"  {args.short:>4} messages: {short:7.3f} ms CPU per run (median)")
        print(f"  long / short: {long / short:.3f}x; each stored message adds {per_message:.2f} µs")
        if profiler is not None:
            stats = pstats.Stats(profiler)
            stats.sort_stats(args.sort).print_stats(args.profile_lines)
    finally:
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await (daemon.state.close() if args.daemon else store.close())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--long", type=int, default=400)
    parser.add_argument("--short", type=int, default=50)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--sort", default="cumulative", help="cProfile order (tottime, ...)")
    parser.add_argument("--profile-lines", type=int, default=45)
    asyncio.run(main(parser.parse_args()))
