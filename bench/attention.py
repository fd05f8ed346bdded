"""Model calls of a bursty operations trace against one run per event, before and after
the scheduling recipes of docs/attention.md (issue 19).

One daemon in this process (memory broker and state, real attention role and workers), a
fake model with a fixed latency. A seeded trace (heartbeats, low-urgency observations, Slack
bursts in threads, alert storms of one group, critical pages) is published in waves with
short gaps; each policy replays the same trace. Printed: model calls as a ratio of the
signals that ask for a run (one run per event), signals never handled (must be 0), and
the worst time from a critical signal's publish to its run's model call.

    uv run python bench/attention.py --sessions 4 --waves 6
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

from loom import Agent, Model, ModelRequest, ModelResponse, RuntimeSignal
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.policies.attention import AttentionPolicy
from loom.wire import publish_signal

RECIPES = AttentionPolicy.from_rules(
    {"source": "heartbeat", "action": "observe"},
    {"source": "alertmanager", "payload": {"status": "resolved"}, "action": "observe"},
    {"source": "alertmanager", "action": "queue", "debounce": 0.3, "max_wait": 1,
     "group": ["labels.alertname"]},
    {"source": "slack", "action": "queue", "debounce": 0.3, "max_wait": 1,
     "group": ["thread_ts"]},
)  # fmt: skip


def trace(seed: int, sessions: int, waves: int) -> list[list[RuntimeSignal]]:
    """Waves of signals; each wave is published at once, then a short gap."""
    rng = random.Random(seed)
    out: list[list[RuntimeSignal]] = []
    for wave in range(waves):
        batch: list[RuntimeSignal] = []
        for s in range(sessions):
            sid = f"s{s}"
            batch.append(RuntimeSignal.create("beat", source="heartbeat", urgency="low",
                                              session_id=sid))  # fmt: skip
            kind = rng.choice(["slack", "storm", "quiet"])
            if kind == "slack":
                for n in range(rng.randint(2, 6)):
                    batch.append(RuntimeSignal.create(
                        f"line {n}", source="slack", type="message", session_id=sid,
                        payload={"thread_ts": f"t{wave}"}))  # fmt: skip
            elif kind == "storm":
                name = f"HighCPU{wave}"
                for n in range(rng.randint(5, 20)):
                    status = "resolved" if n % 4 == 3 else "firing"
                    batch.append(RuntimeSignal.create(
                        f"{name} {status} {n}", source="alertmanager", type="alert",
                        urgency="high", session_id=sid,
                        payload={"status": status, "labels": {"alertname": name}}))  # fmt: skip
        if wave == waves // 2:
            batch.append(RuntimeSignal.create("prod down", urgency="critical", session_id="s0"))
        out.append(batch)
    return out


async def replay(policy: AttentionPolicy | None, waves: list[list[RuntimeSignal]],
                 latency: float) -> dict[str, Any]:  # fmt: skip
    calls: list[str] = []
    critical_at: dict[str, float] = {}
    starts: list[float] = []

    async def model(request: ModelRequest) -> ModelResponse:
        text = request.last_user_text()
        calls.append(text)
        for signal_id, sent in list(critical_at.items()):
            if signal_id in text or "prod down" in text:
                starts.append(time.perf_counter() - sent)
                critical_at.pop(signal_id)
        await asyncio.sleep(latency)
        return ModelResponse(text="ok")

    settings = Settings(broker_url="memory://", state_url="memory://",
                        worker={"lease_ttl": 5.0, "sweep_interval": 0.05})  # fmt: skip
    daemon = Daemon(Agent(Model.function(model), "You watch ops."), settings=settings,
                    attention=policy)  # fmt: skip
    await daemon.start()
    try:
        for batch in waves:
            for signal in batch:
                if signal.urgency == "critical":
                    critical_at[signal.id] = time.perf_counter()
                await publish_signal(daemon.broker, signal)
            await asyncio.sleep(0.15)
        while True:  # until nothing is pending, put off, ready or running
            await daemon.broker.join()  # type: ignore[attr-defined]
            await daemon.worker.run_until_idle()
            busy = [s for s in (f"s{i}" for i in range(64)) if await daemon.state.scheduled(s)]
            if not busy and not daemon.worker.active_sessions:
                break
            await asyncio.sleep(0.1)
        unhandled = 0
        for i in range(64):
            for text in await daemon.state.pending(f"s{i}"):
                unhandled += '"action":"queue"' in text or '"action":"interrupt"' in text
    finally:
        await daemon.stop()
    return {"calls": len(calls), "unhandled": unhandled,
            "critical_start": max(starts) if starts else float("nan")}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    waves = trace(args.seed, args.sessions, args.waves)
    # One run per event: every signal the default policy does not merely observe.
    per_event = sum(1 for batch in waves for s in batch if s.urgency != "low")
    before = await replay(None, waves, args.latency)
    after = await replay(RECIPES, waves, args.latency)
    print(f"signals {sum(map(len, waves))}, one-run-per-event model calls {per_event}")
    for name, figures in (("default policy", before), ("recipes", after)):
        print(f"{name:15} model calls / one-run-per-event {figures['calls'] / per_event:.3f}"
              f"  unhandled {figures['unhandled']}"
              f"  critical start {figures['critical_start'] * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
