"""MCP tool calls: what Loom adds over the bare SDK, under 100 concurrent sessions, and
whether any run after warm-up pays a cold start. (Not bench/mcp.py: run as a script, that
name would shadow the ``mcp`` package.)

Two processes of the fake MCP server (tests/fakes/mcp_server.py) over stdio: one driven by a
bare SDK ``ClientSession.call_tool``, one by Loom (the pooled, supervised connection behind
an ``MCPTool``: schema check, bound on calls in flight, result conversion). Rounds interleave
the two so drift hits both alike.

- added latency: p50 of Loom's ``MCPTool.invoke`` minus p50 of the bare ``call_tool``
  (target <= 0.3 ms).
- 100 sessions: 100 tasks (each its own session) calling at once; wall time of Loom over
  the bare SDK's wall time for the same calls on one session (target <= 1.5x).
- cold start: whole agent runs (one MCP call each) in new sessions after a warm-up run; the
  worst over the median, and the server's tools/list count across them (target: 0).

    uv run python bench/mcp_calls.py --calls 2000 --rounds 5 --sessions 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client

from loom import Agent, Capability, Model, ModelRequest, ModelResponse, Runtime, ToolCall
from loom.policies.governance import GovernancePolicy
from loom.tools import ToolContext

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["-m", "tests.fakes.mcp_server"]
ENV = {"PYTHONPATH": str(ROOT)}


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(call: Any, n: int) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - start)
    return samples


async def main(calls: int, rounds: int, sessions: int, runs: int) -> None:
    capability = Capability.mcp(
        "bench", command=sys.executable, args=ARGS, env=ENV, cwd=str(ROOT), require_approval=False
    )
    agent = Agent(
        Model.function(_one_call),
        capabilities=[capability],
        runtime=Runtime.sdk(governance=GovernancePolicy.allow_all()),
    )
    params = StdioServerParameters(command=sys.executable, args=ARGS, env=ENV, cwd=str(ROOT))
    async with agent, stdio_client(params) as (read, write), ClientSession(read, write) as bare:
        await bare.initialize()
        await bare.list_tools()  # the SDK validates results against listed output schemas
        await agent.tools.prepare()
        add = agent.tools.get("mcp__bench__add")
        assert add is not None
        context = ToolContext(run_id="r", session_id="s", tool_call_id="c")

        async def sdk(i: int) -> Any:
            return await bare.call_tool("add", {"a": i, "b": 1})

        async def loom(i: int) -> Any:
            return await add.invoke({"a": i, "b": 1}, context)

        await timed(sdk, 50)
        await timed(loom, 50)
        bare_samples: list[float] = []
        loom_samples: list[float] = []
        for _ in range(rounds):
            bare_samples += await timed(sdk, calls // rounds)
            loom_samples += await timed(loom, calls // rounds)
        added = p50(loom_samples) - p50(bare_samples)
        print(
            f"call_tool p50: bare SDK {p50(bare_samples):.3f} ms, Loom {p50(loom_samples):.3f} ms"
            f" -> Loom adds {added:.3f} ms ({p50(loom_samples) / p50(bare_samples):.2f}x)"
            " (target <= 0.3 ms)"
        )

        per = 5
        bare_walls, loom_walls = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            await asyncio.gather(*(_repeat(sdk, per) for _ in range(sessions)))
            bare_walls.append(time.perf_counter() - start)
            start = time.perf_counter()
            await asyncio.gather(*(_repeat_in_session(add, f"s{i}", per) for i in range(sessions)))
            loom_walls.append(time.perf_counter() - start)
        bare_wall, loom_wall = statistics.median(bare_walls), statistics.median(loom_walls)
        print(
            f"{sessions} sessions x {per} calls at once: bare SDK {bare_wall * 1000:.1f} ms, "
            f"Loom {loom_wall * 1000:.1f} ms -> {loom_wall / bare_wall:.2f}x (target <= 1.5x)"
        )

        lists_before = await _lists(bare_add=add, context=context)
        first = await _run(agent, "warm-up")
        times = [await _run(agent, f"new-{i}") for i in range(runs)]
        lists_after = await _lists(bare_add=add, context=context)
        median = statistics.median(times)
        print(
            f"agent runs in new sessions: first {first * 1000:.2f} ms, then p50 "
            f"{median * 1000:.2f} ms, worst {max(times) * 1000:.2f} ms "
            f"({max(times) / median:.2f}x p50); tools/list during the runs: "
            f"{lists_after - lists_before} (target 0)"
        )


async def _repeat(call: Any, n: int) -> None:
    for i in range(n):
        await call(i)


async def _repeat_in_session(tool: Any, session: str, n: int) -> None:
    context = ToolContext(run_id="r", session_id=session, tool_call_id="c")
    for i in range(n):
        await tool.invoke({"a": i, "b": 1}, context)


async def _lists(*, bare_add: Any, context: ToolContext) -> int:
    # The server counts the tools/list requests the Loom connection sent it.
    agent_tool = bare_add._connection_for(context)
    result = await agent_tool.call("count_lists", {})
    return int(result.structured_content["result"])


def _one_call(request: ModelRequest) -> ModelResponse | str:
    if request.iteration == 1:
        return ModelResponse.of_tool_calls(ToolCall("c1", "mcp__bench__add", {"a": 1, "b": 2}))
    return json.dumps([m.content for m in request.messages if m.role == "tool"])


async def _run(agent: Agent, session: str) -> float:
    start = time.perf_counter()
    result = await agent.session(session).run("add")
    assert result.status.value == "completed", result.error
    return time.perf_counter() - start


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100)
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.rounds, options.sessions, options.runs))
