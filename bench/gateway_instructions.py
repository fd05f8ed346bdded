"""Instructions per accepted ``POST /signals`` beside a bare confirmed publish (callgrind).

Prints figures; asserts nothing. Needs the services of bench/gateway.py, and valgrind
(``callgrind_control`` on the PATH; without it the bench says so and prints nothing else).
Run: ``uv run python bench/gateway_instructions.py [--n 1000]``.

bench/gateway.py's ratio divides CPU times measured minutes apart on a shared machine, and
swings with the load (a bare publish took 0.13 to 0.23 ms of CPU between runs of one
evening). The user-space instructions a request executes do not swing: this bench counts
them with callgrind, for the same work:

1. ``loom gateway`` under callgrind, its counting switched on only while the bench's HTTP
   clients post ``--n`` signals (after a warm-up): without a dedupe key, with one, then
   both again; the second phase of each kind is reported (the first carries one-time
   costs);
2. bare aio-pika confirmed publishes, as bench/gateway.py makes them, in a process of
   their own under callgrind, counted over the measured ``--n`` publishes.

Instructions leave out what the kernel does (socket calls) and what cache misses cost, so
the ratio here is not the CPU-time ratio; it is the part of it that changes with the code,
measured without the noise. callgrind's commands are taken only while the process runs, so
each is followed by requests (``/healthz``) until it is done; each dump's count is read from
its ``totals:`` line (its ``summary:`` goes wrong once counting has been switched off and on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import uvloop
from gateway import ROOT, _free_port, bare_publish, post_signals, start_gateway
from pipeline import RABBITMQ_URL, REDIS_URL, reachable, teardown

PHASES = ((False, "1"), (True, "1"), (False, "2"), (True, "2"))
"""Without and with a dedupe key, twice: the second of each kind is reported."""


def totals(dump: Path) -> int:
    """The instructions counted in one callgrind dump."""
    found = re.search(r"^totals:\s*(\d+)", dump.read_text(errors="replace"), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {dump}")
    return int(found.group(1))


def dumps(directory: Path, stem: str) -> dict[str, int]:
    """Each dump's trigger (the name given to ``callgrind_control -d``) and its count."""
    counted = {}
    for dump in directory.glob(f"{stem}.*"):
        trigger = re.search(r"^desc: Trigger: dump (\S+)", dump.read_text(errors="replace"), re.M)
        if trigger is not None:
            counted[trigger.group(1)] = totals(dump)
    return counted


def valgrind(out: Path) -> list[str]:
    return ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}.%p"]  # fmt: skip


async def control(pid: int, port: int, *command: str) -> None:
    """``callgrind_control`` ``command`` for the gateway, poked with requests until taken."""
    done = await asyncio.create_subprocess_exec(
        "callgrind_control", *command, str(pid),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    async with aiohttp.ClientSession() as client:
        while done.returncode is None:
            try:
                async with client.get(f"http://127.0.0.1:{port}/healthz") as response:
                    await response.read()
            except aiohttp.ClientError:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.2)


async def gateway(n: int, c: int, directory: Path) -> dict[str, int]:
    """Instructions of the gateway in each phase (``PHASES``), by phase name."""
    ns = f"bench-{uuid.uuid4().hex[:10]}"
    port = _free_port()
    process = await start_gateway(ns, port, prefix=valgrind(directory / "gateway"))
    assert process.pid is not None
    try:
        await post_signals(port, 300, c, "warmup", False)
        for dedupe, run in PHASES:
            name = f"{'with' if dedupe else 'without'}-{run}"
            await control(process.pid, port, "-i", "on")
            _, _, statuses = await post_signals(port, n, c, name, dedupe)
            await control(process.pid, port, "-d", name)
            await control(process.pid, port, "-i", "off")
            if statuses[202] != n:
                raise RuntimeError(f"{name}: not every signal was accepted: {dict(statuses)}")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)
        await teardown(ns)
    return dumps(directory, f"gateway.{process.pid}")


async def bare_child(n: int, c: int) -> None:
    """In the process under callgrind: count the measured publishes of ``bare_publish``."""
    import gateway as bench

    me, seen = str(os.getpid()), 0
    measured = bench.cpu_seconds

    def counting(pid: int | None = None) -> float:
        nonlocal seen  # bare_publish reads the CPU clock before and after its measured phase
        seen += 1
        command = ["-i", "on"] if seen == 1 else ["-d", "bare"]
        subprocess.run(["callgrind_control", *command, me], capture_output=True, check=False)
        return measured(pid)

    bench.cpu_seconds = counting
    ns = f"bench-{uuid.uuid4().hex[:10]}"
    try:
        await bare_publish(ns, n, c)
    finally:
        await teardown(ns)


def bare(n: int, c: int, directory: Path) -> int:
    """Instructions of ``n`` bare publishes, counted in a process of their own."""
    command = [*valgrind(directory / "bare"), sys.executable, __file__, "--bare-child",
               "--n", str(n), "--c", str(c)]  # fmt: skip
    child = subprocess.run(command, cwd=ROOT, check=False, capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"the bare publisher failed: {child.stderr[-2000:]}")
    [pid] = {dump.name.split(".")[1] for dump in directory.glob("bare.*")}
    return dumps(directory, f"bare.{pid}")["bare"]


async def main(args: argparse.Namespace) -> int:
    if args.bare_child:
        await bare_child(args.n, args.c)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        # An optional tool, unlike the services: `make bench` goes on without these figures.
        print("skipped: valgrind (with callgrind_control) is not on the PATH.", file=sys.stderr)
        return 0
    if not reachable(RABBITMQ_URL, 5672) or not reachable(REDIS_URL, 6379):
        print("RabbitMQ and Redis must both be reachable (see bench/gateway.py).", file=sys.stderr)
        return 1
    n, c = args.n, args.c
    print(f"loom gateway instructions: N={n}, {c} requests (and publishes) in flight")
    with tempfile.TemporaryDirectory(prefix="loom-callgrind-") as kept:
        directory = Path(kept)
        counted = await gateway(n, c, directory)
        per_publish = bare(n, c, directory) / n
    print(f"1. bare aio-pika confirmed publish      {per_publish / 1e3:9,.0f}k instructions")
    for label in ("without", "with"):
        first, second = counted[f"{label}-1"] / n, counted[f"{label}-2"] / n
        print(f"2. POST /signals {label:7} dedupe key    {second / 1e3:9,.0f}k instructions"
              f"   (first phase {first / 1e3:,.0f}k)")  # fmt: skip
        print(f"   accepts / bare publishes (instructions)   {per_publish / second:.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="requests per phase")
    parser.add_argument("--c", type=int, default=32, help="requests (and publishes) in flight")
    parser.add_argument("--bare-child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main(arguments)))
