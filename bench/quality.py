"""Cost of a quality gate's check and of a delegation, in interleaved rounds.

- Gate: ``QualityGate`` with two deterministic checks and three criteria judging a
  twenty-message run; the judge's model call is a coroutine handing back a canned verdict,
  so what is measured is everything but the model (the prompt, the strict parse, the
  checks). Against a bare awaited call. Target: at most 50 us per check.
- Delegation: a child run through the parent's delegation tool (new run, governance swap,
  events, parallel bound, usage roll-up) against the child's own loop run on the same task
  directly. The difference is the delegation's overhead. Target: at most 0.2 ms.

    uv run python bench/quality.py --checks 5000 --delegations 500 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from loom import Agent, DelegationPolicy, Message, Model, QualityGate, Runtime, ToolCall
from loom.core.quality import Review
from loom.policies.quality import verdict_json
from loom.runtime.history import WorkingHistory
from loom.runtime.run import Run
from loom.runtime.run_state import RunState

CRITERIA = ["the service answers /healthz", "no error left unexplained", "the answer is short"]
VERDICT = verdict_json([(True, "seen in the probe result")] * len(CRITERIA))


def review() -> Review:
    transcript = [Message.user("Is the service healthy?")]
    for i in range(19):
        transcript.append(Message.assistant(f"step {i}: looking at the logs and probes"))

    async def ask(instructions: str, prompt: str) -> str:
        return VERDICT

    return Review("Is the service healthy?", "healthy: /healthz answers 200", transcript, ask=ask)


def gate() -> QualityGate:
    def answers_healthz(work: Review) -> bool:
        return "/healthz" in work.output

    def short(work: Review) -> bool | str:
        return len(work.output) < 200 or "too long"

    return QualityGate(criteria=CRITERIA, checks=[answers_healthz, short])


async def timed(step: Callable[[], Awaitable[object]], n: int) -> float:
    """Microseconds per awaited step."""
    start = time.perf_counter()
    for _ in range(n):
        await step()
    return (time.perf_counter() - start) / n * 1e6


async def main(checks: int, delegations: int, rounds: int) -> None:
    work, quality = review(), gate()
    verdict = await quality.evaluate(work)
    assert verdict is not None
    assert verdict.passed, verdict

    async def bare() -> object:
        return work.output

    async def check() -> object:
        return await quality.evaluate(work)

    child = Agent(Model.function(lambda request: "child answer"), "You help.", name="helper")
    parent = Agent(
        Model.function(lambda request: "unused"),
        subagents=[child],
        runtime=Runtime.sdk(delegation=DelegationPolicy.depth_limited(1)),
    )
    delegation = parent.loop.delegation
    assert delegation is not None
    parent_run = Run("run_parent", "bench")
    state = RunState(parent_run, WorkingHistory(), [], {}, started_at=datetime.now(UTC))
    call = ToolCall("d1", "delegate_to_helper", {"task": "do it"})

    async def own_loop() -> object:
        run = Run("run_child", "bench")
        result, _ = await child.loop.execute(run, WorkingHistory(), Message.user("do it"))
        await child.loop.conclude(run, result)
        return result

    async def delegated() -> object:
        return await delegation.run(
            state, call, call.arguments, parent.governance, parent.rate_limits
        )

    assert (await delegated()) == ("child answer", False)
    figures: dict[str, list[float]] = {"bare": [], "check": [], "own": [], "delegated": []}
    for _ in range(rounds):  # interleaved, so a busy moment hits every figure alike
        figures["bare"].append(await timed(bare, checks))
        figures["check"].append(await timed(check, checks))
        figures["own"].append(await timed(own_loop, delegations))
        figures["delegated"].append(await timed(delegated, delegations))
        parent_run._events.clear()  # the bench's parent run would keep every event
    base, cost = statistics.median(figures["bare"]), statistics.median(figures["check"])
    own, via = statistics.median(figures["own"]), statistics.median(figures["delegated"])
    print(f"quality: {checks} gate checks, {delegations} delegations x {rounds} rounds (medians)")
    print(f"  bare awaited call: {base:.3f} us")
    print(
        f"  gate check (2 checks, 3 criteria, model call excluded): {cost:.1f} us, "
        f"{cost / base:.0f}x the bare call (target 50 us)"
    )
    print(f"  child's own loop: {own:.1f} us; through delegation: {via:.1f} us")
    print(
        f"  delegation overhead: {(via - own) / 1000:.3f} ms per child, "
        f"{via / own:.2f}x the child's own loop (target 0.2 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=5_000)
    parser.add_argument("--delegations", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.checks, args.delegations, args.rounds))
