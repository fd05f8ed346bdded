"""Per-run overhead of the agent kernel with the offline test model.

Prints figures; asserts nothing. Run: ``uv run python bench/kernel.py [--runs 1000]``.
Targets (issue 2): median at most 0.3 ms a run without tools; the last 100 runs of one
session within 1.5x of the first 100; FileSessionStore save time flat in history length.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from loom import Agent, FileSessionStore, Model, RuntimeSignal, tool


@tool(read_only=True)
def lookup(query: str) -> str:
    """Look something up."""
    return f"result for {query}"


@tool(read_only=True)
async def lookup_async(query: str) -> str:
    """Look something up without a thread."""
    return f"result for {query}"


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(ordered) * 1e3, p95 * 1e3


async def _time(n: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    for i in range(20):  # warm-up
        await call(i)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - start)
    return samples


def _row(label: str, samples: list[float]) -> None:
    median, p95 = _ms(samples)
    print(f"{label:<46} median {median:7.3f} ms   p95 {p95:7.3f} ms")


async def main(runs: int) -> None:
    print(f"loom kernel benchmark: {runs} sequential runs each, Model.test")
    plain = Agent(Model.test(), "You are terse.")
    _row("agent.run, no tool", await _time(runs, lambda i: plain.run(f"task {i}")))

    sync_tool = Agent(Model.test(), "You are terse.", tools=[lookup])
    _row(
        "agent.run, one sync tool call (thread)",
        await _time(runs, lambda i: sync_tool.run(f"task {i}")),
    )
    async_tool = Agent(Model.test(), "You are terse.", tools=[lookup_async])
    _row("agent.run, one async tool call", await _time(runs, lambda i: async_tool.run(f"task {i}")))

    watcher = Agent(Model.test(), "You are terse.")
    notes = [RuntimeSignal.create(f"note {i}", urgency="low") for i in range(runs + 20)]
    _row(
        "agent.receive, observe (the decision step)",
        # A session per 50 signals: under the pending bound, so nothing is dropped.
        await _time(runs, lambda i: watcher.receive(notes[i], session_id=f"watch{i // 50}")),
    )

    session = Agent(Model.test(), "You are terse.").session("bench")
    samples = await _time(runs, lambda i: session.run(f"message {i}"))
    first, last = statistics.median(samples[:100]), statistics.median(samples[-100:])
    _row("one session (memory store), all runs", samples)
    print(
        f"{'  first 100 vs last 100 (median)':<46} {first * 1e3:.3f} ms -> "
        f"{last * 1e3:.3f} ms  ratio {last / first:.2f}x  history {len(session.history)} msgs"
    )

    with tempfile.TemporaryDirectory() as tmp:
        store = FileSessionStore(Path(tmp) / "sessions.jsonl")
        filed = Agent(Model.test(), "You are terse.", session_store=store).session("bench")
        samples = await _time(runs, lambda i: filed.run(f"message {i}"))
        first, last = statistics.median(samples[:100]), statistics.median(samples[-100:])
        _row("one session (FileSessionStore), all runs", samples)
        size = (Path(tmp) / "sessions.jsonl").stat().st_size
        print(
            f"{'  first 100 vs last 100 (median)':<46} {first * 1e3:.3f} ms -> "
            f"{last * 1e3:.3f} ms  ratio {last / first:.2f}x  file {size / 1024:.0f} KiB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    asyncio.run(main(parser.parse_args().runs))
