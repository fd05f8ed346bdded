"""Context manager costs: the compaction decision, loading a long session, knowledge queries,
and a run's overhead with the manager on versus off.

Prints figures; asserts nothing. ``uv run python bench/context.py [--messages 10000]
[--chunks 10000] [--runs 200]``. Targets from issue 16: decision <= 20 us per model call,
loading a 10,000-message session with its summary <= 2 ms on Redis, a knowledge query over
10,000 chunks p95 <= 3 ms, per-run overhead with the manager <= 10% more.

1. decision: ``ContextWindow.fit`` on a 500-message history under the trigger (what every
   model call pays), beside building the request's message list (the baseline);
2. load: ``RedisSessionStore.load_history`` of a session of ``--messages`` messages whose
   stored summary covers all but the last 20 turns, beside the same session without one;
3. knowledge: ``KnowledgeSource.search`` over ``--chunks`` chunks, p50 and p95, beside
   the unranked first-k the 0.8 release answered;
4. per run: ``session.run`` with ``Model.function`` and ``ContextProtocol.manager`` versus
   the kernel's plain drop-oldest-turns window, in interleaved rounds.

Redis: ``LOOM_BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/0); skipped if unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from urllib.parse import urlsplit

from loom import Agent, ContextProtocol, KnowledgeQuery, KnowledgeSource, Model, Runtime
from loom.core.context import ContextSummary, StoredContext
from loom.core.messages import Message
from loom.runtime.context import ContextWindow
from loom.runtime.history import WorkingHistory

REDIS_URL = os.environ.get("LOOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def turns(n: int) -> list[Message]:
    messages: list[Message] = []
    for i in range(n // 2):
        messages.append(Message.user(f"question {i}: is the deployment healthy? " + "ctx " * 20))
        messages.append(Message.assistant(f"answer {i}: all checks passed. " + "detail " * 20))
    return messages


async def decision(rounds: int = 2000) -> None:
    history = WorkingHistory(turns(500))
    window = ContextWindow(ContextProtocol.manager(max_tokens=200_000), history)
    transcript = [Message.user("next")]
    fit, build = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        await window.fit("You watch deployments.", transcript, 30, None)
        fit.append(time.perf_counter() - start)
        start = time.perf_counter()
        _ = [*window.history.messages, *transcript]
        build.append(time.perf_counter() - start)
    d, b = statistics.median(fit) * 1e6, statistics.median(build) * 1e6
    print(
        f"decision per model call: {d:.1f} us (median); building the message list "
        f"{b:.1f} us; ratio {d / b:.2f}x"
    )


async def load(messages: int) -> None:
    from loom.state.redis_sessions import RedisSessionStore

    parts = urlsplit(REDIS_URL)
    try:
        _, writer = await asyncio.open_connection(parts.hostname, parts.port or 6379)
        writer.close()
    except OSError:
        print(f"load: skipped, no Redis at {REDIS_URL}")
        return
    prefix = f"loombench-{uuid.uuid4().hex[:8]}"
    store = RedisSessionStore(REDIS_URL, prefix=prefix, max_messages=messages)
    try:
        history = turns(messages)
        for sid in ("with", "without"):
            for i in range(0, len(history), 500):
                await store.append(sid, messages=history[i : i + 500])
        summary = ContextSummary(upto=messages - 40, text="summary " * 300)
        await store.save_context("with", StoredContext(summary=summary))
        timing: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(30):
            for sid in ("with", "without"):
                start = time.perf_counter()
                snapshot = await store.load_history(sid)
                timing[sid].append(time.perf_counter() - start)
                assert snapshot is not None
        w, wo = (statistics.median(timing[k]) * 1000 for k in ("with", "without"))
        print(
            f"load a {messages}-message session from Redis: with its summary {w:.2f} ms, "
            f"without one {wo:.2f} ms; ratio {w / wo:.2f}x"
        )
    finally:
        client = store._client
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await store.close()


def knowledge(chunks: int) -> None:
    services = [f"svc{n}" for n in range(chunks // 4 + 1)]
    documents = {
        f"{name}.md": f"# {name}\n## Deploy\nDeploy {name} with argo.\n## Rollback\nUndo "
        f"{name} with kubectl rollout undo.\n## Alerts\n{name}Down pages on-call.\n"
        f"## Dependencies\n{name} uses postgres."
        for name in services
    }
    source = KnowledgeSource.inline(documents)
    start = time.perf_counter()
    size = len(source.index)
    built = time.perf_counter() - start
    times, first_k = [], []
    for n in range(300):
        query = KnowledgeQuery(text=f"how do I roll back svc{n * 7 % len(services)}", top_k=3)
        start = time.perf_counter()
        source.search(query)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        _ = source.index.chunks[:3]
        first_k.append(time.perf_counter() - start)
    print(
        f"knowledge over {size} chunks (index built in {built * 1000:.0f} ms): "
        f"p50 {pct(times, 50) * 1000:.2f} ms, p95 {pct(times, 95) * 1000:.2f} ms; "
        f"unranked first-k p95 {pct(first_k, 95) * 1e6:.1f} us"
    )


async def per_run(runs: int) -> None:
    def model(request: object) -> str:
        return "ok " + "a" * 200

    on = Agent(
        Model.function(model),
        "x",
        runtime=Runtime.sdk(context=ContextProtocol.manager(max_tokens=4000)),
    )
    off = Agent(Model.function(model), "x", runtime=Runtime.sdk(max_context_tokens=4000))
    sessions = {"on": on.session("b"), "off": off.session("b")}
    timing: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            await session.run(f"question {i}: " + "q" * 300)
            timing[name].append(time.perf_counter() - start)
    a, b = (statistics.median(timing[k]) * 1000 for k in ("on", "off"))
    print(f"per run: manager on {a:.3f} ms, plain window {b:.3f} ms; ratio {a / b:.2f}x")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    await decision()
    await load(args.messages)
    knowledge(args.chunks)
    await per_run(args.runs)


if __name__ == "__main__":
    asyncio.run(main())
