"""What starting a run costs in history loading, on Redis, as the transcript grows.

A worker's store loads a session's history for each run, while another store (another
worker) appended one turn since. Timed: ``load_history`` of the worker's store, beside a
bare Redis round trip (``PING``) in interleaved rounds, at 10 and at 2,000 messages. Also
printed: the parsed transcripts the store holds, by its own count and by tracemalloc.

Prints figures; asserts nothing. Run: ``uv run python bench/history_load.py [--loads 200]``
(``LOOM_BENCH_REDIS_URL``, default redis://127.0.0.1:6379/0; keys under a fresh prefix,
deleted at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import tracemalloc
import uuid

import redis.asyncio as aioredis

from loom.core.messages import Message, ToolCall
from loom.state.redis_sessions import RedisSessionStore

REDIS_URL = os.environ.get("LOOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SIZES = (10, 2000)


def turn(i: int) -> list[Message]:
    """Four messages, a run's worth: a question, a tool call and its result, an answer."""
    call = ToolCall(f"call_{i}", "check", {"host": f"host-{i % 7}", "deep": True})
    return [
        Message.user(f"question {i}: is the deployment healthy? " + "context " * 20),
        Message.assistant("", (call,)),
        Message.tool_result(call, f"host-{i % 7}: ok " + "detail " * 30),
        Message.assistant(f"answer {i}: all checks passed. " + "detail " * 20),
    ]


async def measure(size: int, loads: int, prefix: str) -> tuple[float, float, int, int]:
    """Median ms of load_history and of a PING; bytes held by the store's count and by
    tracemalloc, after the loads."""
    writer = RedisSessionStore(REDIS_URL, prefix=prefix, max_messages=size)
    reader = RedisSessionStore(REDIS_URL, prefix=prefix, max_messages=size)
    ping = aioredis.Redis.from_url(REDIS_URL)
    session = f"bench-{size}"
    try:
        for i in range(0, size, 4):
            await writer.append(session, messages=turn(i)[: min(4, size - i)])
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        load_times: list[float] = []
        ping_times: list[float] = []
        for i in range(loads):
            await writer.append(session, messages=turn(size + i))  # another worker's run
            began = time.perf_counter()
            snapshot = await reader.load_history(session)
            load_times.append(time.perf_counter() - began)
            if snapshot is None or not snapshot.messages:
                raise RuntimeError(f"session {session} lost its history")
            began = time.perf_counter()
            await ping.ping()
            ping_times.append(time.perf_counter() - began)
        del snapshot
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        traced = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        held = getattr(reader, "held", None)
        counted = held.size if held is not None else 0
        await writer.delete(session)
        return (
            statistics.median(load_times[len(load_times) // 5 :]) * 1e3,
            statistics.median(ping_times[len(ping_times) // 5 :]) * 1e3,
            counted,
            traced,
        )
    finally:
        await writer.close()
        await reader.close()
        await ping.aclose()


async def main(loads: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    print(f"loom history load benchmark (Redis): {loads} loads each, one turn appended between")
    figures = {size: await measure(size, loads, prefix) for size in SIZES}
    for size, (load, ping, counted, traced) in figures.items():
        print(
            f"  {size:>5} messages: load_history {load:7.3f} ms   PING {ping:6.3f} ms   "
            f"ratio {load / ping:6.2f}x a round trip   held {counted / 1024:8.1f} KiB "
            f"(tracemalloc {traced / 1024:8.1f} KiB)"
        )
    small, large = figures[SIZES[0]][0], figures[SIZES[-1]][0]
    print(f"  load at {SIZES[-1]} / load at {SIZES[0]}: {large / small:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=200)
    asyncio.run(main(parser.parse_args().loads))
