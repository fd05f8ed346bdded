"""Decision to tool start: how long an approved call waits after a person decides.

One daemon in this process (every role), on memory and on RabbitMQ + Redis. For each sample a
signal makes a run ask to restart a service; once the run waits, the decision is taken
through the daemon's ``StateApprovalDesk`` (what HTTP, the CLI and Slack call) and the clock
runs until the tool starts.

- held: the worker still holds the paused run (``LOOM_APPROVALS__HOLD`` long); it finds the
  decision by polling the state.
- suspended: the run was suspended (hold 0); the decision's signal goes through the broker
  and the attention role, and a worker resumes the run from its checkpoint.
- baseline: a signal to the start of a tool that needs no approval, in the same process and
  rounds (the floor of the suspended path, which also crosses the broker and attention).

Targets (issue 13): held <= 50 ms p50; suspended <= 300 ms p50 on memory, <= 500 ms on
RabbitMQ + Redis. ``LOOM_BENCH_RABBITMQ_URL`` and ``LOOM_BENCH_REDIS_URL`` as bench/pipeline.py.

    uv run python bench/approvals.py --samples 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import statistics
import time
from typing import Any

from redis.asyncio import Redis

from loom import Agent, Model, ModelRequest, ModelResponse, RuntimeSignal, ToolCall, tool
from loom.broker.rabbitmq import RabbitMQBroker
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.wire import TOPOLOGY, publish_signal

RABBITMQ_URL = os.environ.get("LOOM_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("LOOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

started: dict[str, float] = {}
"""When each service's restart started (perf_counter), by service name."""


@tool(requires_approval=True)
def restart(service: str) -> str:
    """Restart a service."""
    started[service] = time.perf_counter()
    return "ok"


@tool(read_only=True)
def status(service: str) -> str:
    """Read a service's status."""
    started[service] = time.perf_counter()
    return "ok"


def respond(request: ModelRequest) -> ModelResponse:
    if request.messages[-1].role == "tool":
        return ModelResponse(text="done")
    verb, service = request.last_user_text().split()[-2:]
    return ModelResponse.of_tool_calls(ToolCall(f"c-{service}", verb, {"service": service}))


def daemon(backend: str, hold: float, namespace: str) -> Daemon:
    urls = (
        {"broker_url": "memory://", "state_url": "memory://"}
        if backend == "memory"
        else {"broker_url": RABBITMQ_URL, "state_url": REDIS_URL, "namespace": namespace}
    )
    settings = Settings(
        **urls,  # type: ignore[arg-type]
        approvals={"hold": hold, "poll": 0.01},
        worker={"sweep_interval": 0.5},
    )
    agent = Agent(Model.function(respond, name="bench"), tools=[restart, status])
    return Daemon(agent, settings=settings)


async def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.002)
    raise TimeoutError("the bench waited too long")


async def sample(d: Daemon, index: int, mode: str) -> float:
    session, service = f"bench-{index}", f"svc{index}-{secrets.token_hex(3)}"
    if mode == "baseline":
        clock = time.perf_counter()
        await publish_signal(
            d.broker, RuntimeSignal.create(f"status {service}", session_id=session)
        )
        await wait_for(lambda: _started(service))
        return started[service] - clock
    await publish_signal(d.broker, RuntimeSignal.create(f"restart {service}", session_id=session))
    checkpoint = await wait_for(lambda: d.state.suspensions.load(session))
    if mode == "suspended":
        await wait_for(lambda: _free(d, session))
    clock = time.perf_counter()
    await d.approvals.decide(session, checkpoint.pending[0].id, "approve", by="bench")
    await wait_for(lambda: _started(service))
    return started[service] - clock


async def _started(service: str) -> bool:
    return service in started


async def _free(d: Daemon, session: str) -> bool:
    return await d.state.lease_holder(session) is None and session not in d.worker.active_sessions


async def measure(backend: str, samples: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"baseline": [], "held": [], "suspended": []}
    namespace = f"bench-apr-{secrets.token_hex(3)}"
    daemons = {
        "held": daemon(backend, 60.0, namespace + "h"),
        "suspended": daemon(backend, 0.0, namespace + "s"),
    }
    daemons["baseline"] = daemons["suspended"]
    for d in {id(d): d for d in daemons.values()}.values():
        await d.start()
    try:
        names = itertools.count()
        for _ in range(samples):  # interleaved rounds: one sample of each per round
            for mode in ("baseline", "held", "suspended"):
                seconds = await sample(daemons[mode], next(names), mode)
                figures[mode].append(seconds * 1000)
    finally:
        for d in {id(d): d for d in daemons.values()}.values():
            with contextlib.suppress(Exception):
                await d.stop()
        if backend != "memory":
            await teardown(namespace + "h")
            await teardown(namespace + "s")
    return figures


async def teardown(namespace: str) -> None:
    broker = RabbitMQBroker(RABBITMQ_URL, topology=TOPOLOGY, namespace=namespace)
    with contextlib.suppress(Exception):
        await broker.start()
        await broker.delete_topology()
    await broker.close()
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{namespace}:loom*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(samples: int, backends: list[str]) -> None:
    targets = {"memory": {"held": 50, "suspended": 300}, "redis": {"held": 50, "suspended": 500}}
    for backend in backends:
        figures = await measure(backend, samples)
        base = statistics.median(figures["baseline"])
        name = "memory" if backend == "memory" else "RabbitMQ + Redis"
        print(f"\n{name}: decision to tool start ({samples} samples each, interleaved)")
        for mode in ("baseline", "held", "suspended"):
            values = figures[mode]
            p50, p99 = statistics.median(values), pct(values, 0.99)
            target = targets[backend].get(mode)
            goal = f"  target p50 <= {target} ms" if target else "  (signal to tool start)"
            print(
                f"  {mode:<10} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  "
                f"p50 / baseline {p50 / base:5.2f}x{goal}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--backends", nargs="+", default=["memory", "redis"])
    arguments = parser.parse_args()
    asyncio.run(main(arguments.samples, arguments.backends))
