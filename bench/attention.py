"""Model calls, prompt sizes and critical start of a bursty operations trace posted to
``POST /signals``: one run per event, the old main, the default policy and the scheduling
recipes of docs/attention.md (issues 19, 16).

One daemon in this process (memory broker and state, real attention role and workers) and
its gateway app (``build_app(daemon, gateway=True)``, with an API token) served in the same
process through ``httpx.ASGITransport``: every signal is a ``POST /signals`` that must get
its 202 (given once the broker confirmed it). A fake model takes 0.5 s a call. A seeded
trace (heartbeats, Slack bursts in threads, alert storms of one group with their resolves)
comes in waves, each spread over the gap to the next in an order that interleaves the
sessions. Ten critical pages come on top, each while its session is busy with a 30 s model
call: a "long answer" ask goes first, and the page is posted 0.2 s into the session's first
call on it, which the page's interrupt must cut. Each mode replays the same trace, one after
the other in this process:

- ``old main``: the behaviour before issue 19, rebuilt in place: the "more work?" check
  counts observed signals (so they start runs, defect 1) and every run's input lists every
  observed signal and open risk whole (defect 5); the default policy, which has no
  schedule. Interrupts are today's (they cut the model call, the interrupted run's signals
  carried over): the old main let a page wait for the whole 30 s call, which is not
  rebuilt here.
- ``default, old input``: today's worker with the old input, to show the digest's share;
- ``default policy`` and ``recipes``: today's worker, observed signals and risks in
  ``C_working`` as a digest; the recipes with and without their minimum interval;
- ``busy rule``: "an alert while busy: observe", on the old main and today.

Printed: model calls as a ratio of the signals that ask for a run (one run per event) and
of the old main; prompt characters (instructions and messages) per model call as a ratio
of the old main; queued signals never handled (must be 0); p50/p99/max of the time from a
critical page's POST to the start of its run's model call (nearest rank: with ten pages
p99 is the worst); how many pages came while their session's slow call was in flight, how
many of those calls were cancelled and their runs ended ``interrupted``, and the longest
from a page's POST to its slow call's cancellation.

    uv run python bench/attention.py --sessions 4 --waves 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from loom import Agent, Model, ModelRequest, ModelResponse, RuntimeSignal
from loom.daemon import worker
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.run_input import RunInput
from loom.daemon.settings import Settings
from loom.policies.attention import AttentionPolicy
from loom.runtime.working import SignalDigest
from loom.state import base as state_base
from loom.wire import PendingSignal

TOKEN = "bench-attention-token"
SESSIONS = [f"s{i}" for i in range(64)]
SLOW_CALL = 30.0
"""Seconds the fake model takes on a session's first call on a long ask: a page must cut it."""

SCALE = 0.1
"""Bench seconds per real second: the 0.5 s model calls stand for 5 s ones, the recipes'
delays are docs/attention.md's times this."""

SLACK_AND_STORMS = (
    {"source": "slack", "type": "message", "action": "queue", "debounce": 3 * SCALE,
     "max_wait": 10 * SCALE, "group": ["thread_ts"]},
    {"source": "alertmanager", "payload": {"status": "resolved"}, "action": "observe"},
    {"source": "alertmanager", "action": "queue", "debounce": 5 * SCALE,
     "max_wait": 20 * SCALE, "group": ["labels.alertname", "labels.cluster"]},
    {"source": "heartbeat", "action": "observe"},
)  # fmt: skip
RECIPES = AttentionPolicy.from_rules(*SLACK_AND_STORMS, schedule={"min_interval": 60 * SCALE})
"""The recipes of docs/attention.md together (Slack threads, alert storms, heartbeats with
a session's runs at most one a minute), scaled."""
RECIPES_NO_INTERVAL = AttentionPolicy.from_rules(*SLACK_AND_STORMS)


BUSY_RULE = AttentionPolicy.from_rules({"type": "alert", "busy": True, "action": "observe"})
"""The issue's rule "a firing alert while busy: observe", which saved nothing on the old
main: the observed alerts started runs of their own."""


def trace(seed: int, sessions: int, waves: int) -> list[list[RuntimeSignal]]:
    """Waves of signals, each in a seeded order that interleaves the sessions' bursts (a
    wave is posted spread evenly over the gap between waves)."""
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
        rng.shuffle(batch)
        out.append(batch)
    return out


@dataclass(frozen=True, slots=True)
class Page:
    """A critical page that arrives while its session is busy with a slow model call: the
    ``ask`` before it wants a long answer, and the session's first call on it takes
    ``SLOW_CALL`` seconds unless the page's interrupt cuts it."""

    number: int
    wave: int
    ask: RuntimeSignal
    page: RuntimeSignal

    @property
    def ask_tag(self) -> str:
        return f"[long-{self.number}]"

    @property
    def page_tag(self) -> str:
        return f"[page-{self.number}]"


def pages(count: int, sessions: int, waves: int) -> list[Page]:
    """``count`` pages spread over the waves and the sessions."""
    out = []
    for k in range(count):
        sid = f"s{k % sessions}"
        ask = RuntimeSignal.create(f"[long-{k}] write the postmortem of last week in full",
                                   source="chat", type="message", session_id=sid)  # fmt: skip
        page = RuntimeSignal.create(f"[page-{k}] prod down", source="pagerduty",
                                    urgency="critical", session_id=sid)  # fmt: skip
        out.append(Page(k, k * waves // count, ask, page))
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
    """The worker as it was before issue 19, in the parts this trace exercises: the "more
    work?" check (now the state's ``asks_for_run``) counting observed signals, and the old
    run input."""
    # Patched where ``WorkingState.has_work`` reads it (an import, hence the ignores).
    saved = state_base.asks_for_run, worker.render_run_input  # type: ignore[attr-defined]
    if observed_start_runs:
        state_base.asks_for_run = lambda records: bool(records)  # type: ignore[attr-defined]
    if old_input:
        worker.render_run_input = old_run_input
    try:
        yield
    finally:
        state_base.asks_for_run, worker.render_run_input = saved  # type: ignore[attr-defined]


def prompt_chars(request: ModelRequest) -> int:
    return len(request.instructions) + sum(len(m.content) for m in request.messages)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: with ten pages, p99 is the worst of them."""
    if not values:
        return float("nan")
    ranked = sorted(values)
    return ranked[max(math.ceil(q * len(ranked)) - 1, 0)]


@dataclass
class Replay:
    """What one mode's replay saw."""

    calls: int = 0
    prompt: float = 0.0
    unhandled: int = 0
    critical_starts: list[float] = field(default_factory=list)
    """Seconds from a page's POST to the start of its run's model call."""
    busy_pages: int = 0
    """Pages posted while their session's slow call was in flight."""
    cut: list[float] = field(default_factory=list)
    """Seconds from a page's POST to its session's slow call being cancelled."""
    interrupted: int = 0
    """Runs of a slow call that ended ``interrupted``."""
    wall: float = 0.0


async def replay(policy: AttentionPolicy | None, waves: list[list[RuntimeSignal]],
                 paged: list[Page], latency: float, gap: float) -> Replay:  # fmt: skip
    out = Replay()
    sizes: list[int] = []
    posted: dict[int, float] = {}  # page number: when its POST was sent, until its call
    sent: dict[int, float] = {}
    slow_started = {p.number: asyncio.Event() for p in paged}
    cut_at: dict[int, float] = {}

    async def model(request: ModelRequest) -> ModelResponse:
        text = request.last_user_text()
        now = time.perf_counter()
        sizes.append(prompt_chars(request))
        for p in paged:
            if p.number in posted and p.page_tag in text:
                out.critical_starts.append(now - posted.pop(p.number))
        # A session's first call on a long ask is slow, unless its page is already here.
        slow = [p for p in paged if p.ask_tag in text and p.page_tag not in text
                and not slow_started[p.number].is_set()]  # fmt: skip
        if not slow:
            await asyncio.sleep(latency)
            return ModelResponse(text="ok")
        for p in slow:
            slow_started[p.number].set()
        try:
            await asyncio.sleep(SLOW_CALL)
        except asyncio.CancelledError:  # the interrupt closed the call
            for p in slow:
                cut_at[p.number] = time.perf_counter()
            raise
        return ModelResponse(text="the postmortem, in full")

    settings = Settings.model_validate({
        "broker_url": "memory://", "state_url": "memory://", "api_token": TOKEN,
        "worker": {"lease_ttl": 5.0, "sweep_interval": 0.05}})  # fmt: skip
    daemon = Daemon(Agent(Model.function(model), "You watch ops."), settings=settings,
                    attention=policy)  # fmt: skip
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    began = time.perf_counter()
    await daemon.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:

            async def post(signal: RuntimeSignal) -> None:
                response = await client.post("/signals", content=signal.model_dump_json(),
                                             headers=headers)  # fmt: skip
                if response.status_code != 202:
                    raise SystemExit(f"POST /signals {response.status_code}: {response.text}")

            async def page_when_busy(p: Page) -> None:
                await post(p.ask)
                with contextlib.suppress(TimeoutError):  # counted: busy_pages
                    await asyncio.wait_for(slow_started[p.number].wait(), SLOW_CALL / 3)
                    await asyncio.sleep(0.2)  # well into the slow call
                    out.busy_pages += 1
                sent[p.number] = posted[p.number] = time.perf_counter()
                await post(p.page)

            paging: list[asyncio.Task[None]] = []
            for wave, batch in enumerate(waves):
                paging += [asyncio.create_task(page_when_busy(p)) for p in paged if p.wave == wave]
                wave_start = time.perf_counter()
                for n, signal in enumerate(batch):
                    await asyncio.sleep(wave_start + n * gap / len(batch) - time.perf_counter())
                    await post(signal)
                await asyncio.sleep(wave_start + gap - time.perf_counter())
            await asyncio.gather(*paging)
            while True:  # until nothing is pending, put off, ready or running
                await daemon.broker.join()  # type: ignore[attr-defined]
                await daemon.worker.run_until_idle()
                busy = [s for s in SESSIONS if await daemon.state.scheduled(s)]
                if not busy and not daemon.worker.active_sessions:
                    break
                await asyncio.sleep(0.1)
            for sid in SESSIONS:  # asking for a run and left pending, or taken and left
                left = await daemon.state.pending(sid)
                out.unhandled += sum(PendingSignal.from_json(t).action.wakes_a_worker for t in left)
                out.unhandled += len(await daemon.state.in_flight(sid))
            for p in paged:  # the run that made the slow call: the first to take the ask
                response = await client.get(f"/sessions/{p.ask.session_id}", headers=headers)
                runs = [r for r in response.json()["runs"]
                        if p.ask.id in r["metadata"].get("signals", ())]  # fmt: skip
                out.interrupted += bool(runs) and runs[0]["status"] == "interrupted"
    finally:
        await daemon.stop()
    out.wall = time.perf_counter() - began
    out.calls = len(sizes)
    out.prompt = sum(sizes) / max(len(sizes), 1)
    out.cut = [cut_at[n] - sent[n] for n in cut_at]
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per model call")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between waves")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    if args.sessions > len(SESSIONS):
        parser.error(f"--sessions: at most {len(SESSIONS)}")
    waves = trace(args.seed, args.sessions, args.waves)
    paged = pages(args.pages, args.sessions, args.waves)
    signals = sum(map(len, waves)) + 2 * len(paged)
    # One run per event: every signal the default policy does not merely observe.
    per_event = sum(1 for batch in waves for s in batch if s.urgency != "low") + 2 * len(paged)
    results: dict[str, Replay] = {}

    async def mode(policy: AttentionPolicy | None) -> Replay:
        return await replay(policy, waves, paged, args.latency, args.gap)

    with old_main(observed_start_runs=True, old_input=True):
        results["old main"] = await mode(None)
    with old_main(observed_start_runs=False, old_input=True):
        results["default, old input"] = await mode(None)
    results["default policy"] = await mode(None)
    results["recipes, no interval"] = await mode(RECIPES_NO_INTERVAL)
    results["recipes"] = await mode(RECIPES)
    with old_main(observed_start_runs=True, old_input=True):
        results["busy rule, old main"] = await mode(BUSY_RULE)
    results["busy rule"] = await mode(BUSY_RULE)
    old = results["old main"]
    print(f"signals {signals} by POST /signals, one-run-per-event model calls {per_event}, "
          f"{len(paged)} critical pages, each while its session waits on a {SLOW_CALL:.0f} s "
          f"call; model calls {args.latency:.2f} s, waves {args.gap:.2f} s apart")  # fmt: skip
    print(f"{'':20} {'calls':>5} {'/per-event':>10} {'/old main':>9} {'prompt chars':>12}"
          f" {'/old main':>9} {'unhandled':>9} {'critical start p50/p99/max':>26}"
          f" {'busy':>5} {'cut':>5} {'interrupted':>11} {'cut max':>8} {'wall':>6}")  # fmt: skip
    for name, r in results.items():
        starts = "/".join(f"{percentile(r.critical_starts, q) * 1000:.0f}"
                          for q in (0.5, 0.99, 1.0))  # fmt: skip
        missed = len(paged) - len(r.critical_starts)
        starts += f" ms{f' ({missed} never)' if missed else ''}"
        print(f"{name:20} {r.calls:5d} {r.calls / per_event:10.3f}"
              f" {r.calls / old.calls:9.3f} {r.prompt:12.0f}"
              f" {r.prompt / old.prompt:9.3f} {r.unhandled:9d} {starts:>26}"
              f" {r.busy_pages:5d} {len(r.cut):5d} {r.interrupted:11d}"
              f" {max(r.cut, default=float('nan')):7.2f}s {r.wall:5.1f}s")  # fmt: skip
    print(
        "busy: pages posted while their session's slow call was in flight; cut: slow calls "
        "cancelled; interrupted: their runs that ended interrupted; cut max: a page's POST "
        "to its slow call's cancellation"
    )


if __name__ == "__main__":
    asyncio.run(main())
