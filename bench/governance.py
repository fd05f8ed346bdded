"""Cost of governing one tool call: ``review`` with a ten-rule policy, against a bare
awaited function call measured in the same interleaved rounds.

The policy has two deny globs, three allow globs, two veto rules on the arguments, two
approval globs and a rate limit (``admit`` is measured apart, on the memory rate limits).
The issue's target is at most 5 us per review.

    uv run python bench/governance.py --calls 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from loom import GovernancePolicy
from loom.core.governance import ToolCallInfo
from loom.state.memory_rate_limits import MemoryRateLimits


def ten_rule_policy() -> GovernancePolicy:
    return GovernancePolicy.default(
        deny=["mcp__prod__*", "drop_*"],
        allow=["shell*", "read_*", "mcp__k8s__*"],
        veto=[
            lambda call: "rm -rf" in str(call.arguments.get("cmd", "")),
            lambda call: call.arguments.get("namespace") == "kube-system",
        ],
        require_approval=["mcp__k8s__delete*", "shell_root"],
        rate_limits={"shell*": "1000000/minute"},
    )


async def baseline(call: ToolCallInfo) -> bool:
    return call.tool != ""


async def per_call_us(step: Callable[[ToolCallInfo], Awaitable[object]], n: int) -> float:
    calls = [
        ToolCallInfo("shell_exec", {"cmd": "ls -l /srv"}),
        ToolCallInfo("read_file", {"path": "/etc/hosts"}, read_only=True),
        ToolCallInfo("mcp__k8s__get_pods", {"namespace": "default"}, read_only=True),
    ]
    start = time.perf_counter()
    for i in range(n):
        await step(calls[i % 3])
    return (time.perf_counter() - start) / n * 1e6


async def main(calls: int, rounds: int) -> None:
    policy = ten_rule_policy()
    limits = MemoryRateLimits()

    async def admit(call: ToolCallInfo) -> object:
        return await policy.admit(call, limits)

    figures: dict[str, list[float]] = {"baseline": [], "review": [], "admit": []}
    for _ in range(rounds):  # interleaved, so a busy moment hits all three alike
        figures["baseline"].append(await per_call_us(baseline, calls))
        figures["review"].append(await per_call_us(policy.review, calls))
        figures["admit"].append(await per_call_us(admit, calls))
    base = statistics.median(figures["baseline"])
    print(f"governance: {calls} calls x {rounds} rounds, ten-rule policy (median of rounds)")
    print(f"  bare awaited call: {base:.3f} us")
    for name in ("review", "admit"):
        cost = statistics.median(figures[name])
        print(f"  {name:6}: {cost:.3f} us per call, {cost / base:.1f}x the bare call (target 5 us)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
