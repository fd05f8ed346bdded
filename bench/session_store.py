"""Append cost of the session stores as a session's history grows.

Appends N runs (a user message, an assistant reply, a run record) to one session and prints
the median and p95 append time of the first and the last 100 appends, and their ratio. A flat
store has a ratio near 1; the Loom 0.8 FileSessionStore, which rewrote its whole JSON file on
every save, went from ~6 ms to ~81 ms per run within 200 runs.

    uv run python bench/session_store.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from loom.core.messages import Message
from loom.state import FileSessionStore, InMemorySessionStore, RunRecord, SessionStore

N = 2000
WINDOW = 100


async def append_times(store: SessionStore) -> list[float]:
    """Milliseconds taken by each of N appends to one session."""
    times: list[float] = []
    for i in range(N):
        messages = [
            Message.user(f"question {i}: is the deployment healthy? " + "context " * 20),
            Message.assistant(f"answer {i}: all checks passed. " + "detail " * 30),
        ]
        run = RunRecord(
            run_id=f"run-{i:06d}",
            session_id="bench",
            status="completed",
            output=f"answer {i}",
            usage={"input_tokens": 1200, "output_tokens": 80, "requests": 1},
        )
        start = time.perf_counter()
        await store.append("bench", messages=messages, run=run)
        times.append((time.perf_counter() - start) * 1000)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def report(name: str, times: list[float]) -> None:
    first, last = times[:WINDOW], times[-WINDOW:]
    ratio = statistics.median(last) / statistics.median(first)
    print(f"{name}: {N} appends to one session")
    print(f"  first {WINDOW}: median {statistics.median(first):.3f} ms  p95 {p95(first):.3f} ms")
    print(f"  last  {WINDOW}: median {statistics.median(last):.3f} ms  p95 {p95(last):.3f} ms")
    print(f"  ratio last/first (median): {ratio:.2f}")
    print(f"  slowest append: {max(times):.3f} ms (includes any compaction)")


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "sessions.jsonl"
        store = FileSessionStore(path)
        report("FileSessionStore", await append_times(store))
        print(f"  file size: {path.stat().st_size / 1024:.1f} KiB")
        start = time.perf_counter()
        await store.load("bench")
        print(f"  load: {(time.perf_counter() - start) * 1000:.3f} ms")
        await store.close()
        start = time.perf_counter()
        reopened = FileSessionStore(path)
        await reopened.load("bench")
        print(f"  reopen + first load: {(time.perf_counter() - start) * 1000:.3f} ms")
        await reopened.close()

    memory = InMemorySessionStore()
    report("InMemorySessionStore", await append_times(memory))
    start = time.perf_counter()
    await memory.load("bench")
    print(f"  load: {(time.perf_counter() - start) * 1000:.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
