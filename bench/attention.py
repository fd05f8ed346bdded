"""Model calls and prompt sizes of a bursty operations trace: one run per event, the old
main, the default policy and the scheduling recipes of docs/attention.md (issues 19, 16).

One daemon in this process (memory broker and state, real attention role and workers), a
fake model with a fixed latency. A seeded trace (heartbeats, low-urgency observations, Slack
bursts in threads, alert storms of one group, critical pages) is published in waves with
short gaps; each mode replays the same trace, one after the other in this process:

- ``old main``: the behaviour before issue 19, rebuilt in place: the worker's "more work?"
  check counts observed signals (so they start runs, defect 1) and every run's input lists
  every observed signal and open risk whole (defect 5); the default policy, which has no
  schedule. (The other defects, interrupts not cutting the model call and an interrupted
  run's signals not carried over, touch only the one critical page here.)
- ``default, old input``: today's worker with the old input, to show the digest's share;
- ``default policy`` and ``recipes``: today's worker, observed signals and risks in
  ``C_working`` as a digest;
- ``busy rule``: "an alert while busy: observe", on the old main and today.

Printed: model calls as a ratio of the signals that ask for a run (one run per event) and
of the old main; prompt characters (instructions and messages) per model call as a ratio
of the old main; signals never handled (must be 0); the worst time from a critical
signal's publish to its run's model call.

    uv run python bench/attention.py --sessions 4 --waves 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from loom import Agent, Model, ModelRequest, ModelResponse, RuntimeSignal
from loom.daemon import worker
from loom.daemon.app import Daemon
from loom.daemon.run_input import RunInput
from loom.daemon.settings import Settings
from loom.policies.attention import AttentionPolicy
from loom.runtime.working import SignalDigest
from loom.wire import PendingSignal, publish_signal

RECIPES = AttentionPolicy.from_rules(
    {"source": "heartbeat", "action": "observe"},
    {"source": "alertmanager", "payload": {"status": "resolved"}, "action": "observe"},
    {"source": "alertmanager", "action": "queue", "debounce": 0.3, "max_wait": 1,
     "group": ["labels.alertname"]},
    {"source": "slack", "action": "queue", "debounce": 0.3, "max_wait": 1,
     "group": ["thread_ts"]},
)  # fmt: skip


BUSY_RULE = AttentionPolicy.from_rules({"type": "alert", "busy": True, "action": "observe"})
"""The issue's rule "a firing alert while busy: observe", which saved nothing on the old
main: the observed alerts started runs of their own."""


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


def old_run_input(signals: Sequence[PendingSignal], risks: Mapping[str, str]) -> RunInput:
    """The run input of the old main: every signal taken and every open risk, whole."""
    sections: dict[str, list[str]] = {}
    for pending in sorted(signals, key=lambda p: not p.action.wakes_a_worker):
        sections.setdefault(pending.action.prompt_section, []).append(pending.signal.describe())
    if risks:
        sections["Active risks"] = list(risks.values())
    text = "\n\n".join(
        f"{heading}:\n" + "\n".join(f"- {line}" for line in lines)
        for heading, lines in sections.items()
    )
    return RunInput(text, SignalDigest())


@contextlib.contextmanager
def old_main(*, observed_start_runs: bool, old_input: bool) -> Iterator[None]:
    """The worker as it was before issue 19, in the parts this trace exercises."""
    saved = worker.wakes_a_worker, worker.render_run_input
    if observed_start_runs:
        worker.wakes_a_worker = lambda texts: bool(texts)  # any pending signal: a run
    if old_input:
        worker.render_run_input = old_run_input
    try:
        yield
    finally:
        worker.wakes_a_worker, worker.render_run_input = saved


def prompt_chars(request: ModelRequest) -> int:
    return len(request.instructions) + sum(len(m.content) for m in request.messages)


async def replay(policy: AttentionPolicy | None, waves: list[list[RuntimeSignal]],
                 latency: float) -> dict[str, Any]:  # fmt: skip
    calls: list[str] = []
    sizes: list[int] = []
    critical_at: dict[str, float] = {}
    starts: list[float] = []

    async def model(request: ModelRequest) -> ModelResponse:
        text = request.last_user_text()
        calls.append(text)
        sizes.append(prompt_chars(request))
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
            "prompt": sum(sizes) / max(len(sizes), 1),
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
    results: dict[str, dict[str, Any]] = {}
    with old_main(observed_start_runs=True, old_input=True):
        results["old main"] = await replay(None, waves, args.latency)
    with old_main(observed_start_runs=False, old_input=True):
        results["default, old input"] = await replay(None, waves, args.latency)
    results["default policy"] = await replay(None, waves, args.latency)
    results["recipes"] = await replay(RECIPES, waves, args.latency)
    with old_main(observed_start_runs=True, old_input=True):
        results["busy rule, old main"] = await replay(BUSY_RULE, waves, args.latency)
    results["busy rule"] = await replay(BUSY_RULE, waves, args.latency)
    old = results["old main"]
    print(f"signals {sum(map(len, waves))}, one-run-per-event model calls {per_event}")
    print(f"{'':19} {'calls':>5} {'/per-event':>10} {'/old main':>9} {'prompt chars':>12}"
          f" {'/old main':>9} {'unhandled':>9} {'critical start':>14}")  # fmt: skip
    for name, figures in results.items():
        print(f"{name:19} {figures['calls']:5d} {figures['calls'] / per_event:10.3f}"
              f" {figures['calls'] / old['calls']:9.3f} {figures['prompt']:12.0f}"
              f" {figures['prompt'] / old['prompt']:9.3f} {figures['unhandled']:9d}"
              f" {figures['critical_start'] * 1000:11.0f} ms")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
