"""The console's sessions page with 100,000 sessions in Redis: time to render one page.

Fills a namespace of the local Redis with ``--sessions`` sessions through the real
decision script (``record_signals``, in batches), a few of them busy (a lease held), then
serves the gateway's app in this process (``httpx.ASGITransport``, no network) and times,
in interleaved rounds, the sessions page (a random page of all sessions, and of the idle
ones: the filter that pages around the busy) against two baselines: ``GET /healthz`` and
the JSON session view ``GET /sessions/{id}``. Target: p95 of one page at most 100 ms.

    uv run python bench/console.py --sessions 100000 --requests 200 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid

import httpx

from loom import Agent, Model
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.state.working import SignalRecord

TOKEN = "bench-token"


async def fill(daemon: Daemon, sessions: int, busy: int) -> None:
    state = daemon.state
    batch: list[SignalRecord] = []
    for i in range(sessions):
        decision = json.dumps({"signal_id": f"sig-{i}", "source": "bench", "type": "event",
                               "urgency": "low", "summary": f"disk at {i % 100}% <b>",
                               "action": "observe", "reason": "bench",
                               "decided_at": "2025-01-01T00:00:00+00:00"})  # fmt: skip
        batch.append(SignalRecord(f"s-{i:06d}", decision))
        if len(batch) == 1000:
            await state.record_signals(batch)
            batch = []
    await state.record_signals(batch)
    for i in range(busy):
        await state.acquire_lease(f"s-{i * 997 % sessions:06d}", "bench-worker", 600)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--busy", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    namespace = f"bench-console-{uuid.uuid4().hex[:8]}"
    settings = Settings(state_url=args.redis, namespace=namespace, api_token=TOKEN)
    daemon = Daemon(Agent(Model.test(), "bench"), settings=settings)
    await daemon.state.start()
    try:
        started = time.perf_counter()
        await fill(daemon, args.sessions, args.busy)
        print(f"filled {args.sessions} sessions ({args.busy} busy) in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        app = build_app(daemon, gateway=True, console=settings.console)
        pages = max(1, args.sessions // settings.console.page_size)
        headers = {"authorization": f"Bearer {TOKEN}"}
        targets = {
            "healthz": lambda: "/healthz",
            "GET /sessions/{id}": lambda: f"/sessions/s-{random.randrange(args.sessions):06d}",
            "console page": lambda: f"/console/sessions?page={random.randrange(1, pages + 1)}",
            "console idle page": lambda: (
                f"/console/sessions?status=idle&page={random.randrange(1, pages)}"
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in targets}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers=headers) as client:  # fmt: skip
            for _ in range(args.rounds):
                for name, path in targets.items():
                    for _ in range(args.requests):
                        url = path()
                        t0 = time.perf_counter()
                        answer = await client.get(url)
                        times[name].append(time.perf_counter() - t0)
                        assert answer.status_code == 200, (url, answer.status_code)
        base = statistics.median(times["GET /sessions/{id}"])
        print(f"{'request':<22}{'p50 ms':>9}{'p95 ms':>9}{'p50 / session view':>20}")
        for name, samples in times.items():
            median = statistics.median(samples)
            row = f"{name:<22}{median * 1000:>9.2f}{p95(samples) * 1000:>9.2f}"
            print(f"{row}{median / base:>20.2f}")
        worst = max(p95(times["console page"]), p95(times["console idle page"])) * 1000
        print(f"p95 of one sessions page: {worst:.1f} ms (target <= 100 ms)")
    finally:
        client_ = daemon.state._client  # type: ignore[attr-defined]
        keys = [key async for key in client_.scan_iter(match=f"{namespace}:*", count=5000)]
        for at in range(0, len(keys), 5000):
            await client_.delete(*keys[at : at + 5000])
        await daemon.state.close()


if __name__ == "__main__":
    asyncio.run(main())
