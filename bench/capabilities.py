"""Cost of the capabilities' confinement, each against its bare equivalent measured in the
same interleaved rounds:

- a 4 KB ``read_file`` (walk from the root's descriptor with O_NOFOLLOW, fstat, read)
  against ``open(path).read()``; the issue's target is a p50 of at most 50 us;
- a ``run_command`` of ``true`` against a bare ``asyncio.create_subprocess_exec`` of
  ``/bin/sh -c true``; target: at most 2 ms added;
- a ``fetch_url`` from a loopback server (resolution, address check, pinned connection,
  streamed read, text) against a bare ``httpx`` GET; target: at most 2 ms added.

    uv run python bench/capabilities.py --reads 2000 --commands 40 --fetches 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from aiohttp import web

from loom.tools.files import Files
from loom.tools.shell import Shell
from loom.tools.web import Web, WebOptions


def p50_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def timed(step: Callable[[], Awaitable[object]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - start)
    return samples


async def interleaved(
    bare: Callable[[], Awaitable[object]],
    ours: Callable[[], Awaitable[object]],
    n: int,
    rounds: int = 4,
) -> tuple[float, float]:
    """p50 seconds of each, alternating rounds so drift hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a += await timed(bare, max(1, n // rounds))
        b += await timed(ours, max(1, n // rounds))
    return statistics.median(a), statistics.median(b)


def report(name: str, bare: float, ours: float, unit: str, target: str) -> None:
    scale = 1e6 if unit == "us" else 1e3
    print(
        f"{name:<10} bare p50 {bare * scale:8.1f} {unit}  loom p50 {ours * scale:8.1f} {unit}  "
        f"added {(ours - bare) * scale:7.1f} {unit}  ratio {ours / bare:5.2f}x  ({target})"
    )


async def bench_read(n: int, root: Path) -> None:
    (root / "logs").mkdir()
    path = root / "logs" / "app.log"
    path.write_bytes(b"x" * 4095 + b"\n")
    files = Files(root)

    async def bare() -> object:
        return path.read_bytes()

    async def ours() -> object:
        return files.read("logs/app.log")

    report("read 4KB", *await interleaved(bare, ours, n), "us", "target: loom p50 <= 50 us")


async def bench_shell(n: int, root: Path) -> None:
    shell = Shell(root)

    async def bare() -> object:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "true", stdout=asyncio.subprocess.PIPE
        )
        return await process.communicate()

    async def ours() -> object:
        return await shell.run("true")

    report("shell", *await interleaved(bare, ours, n), "ms", "target: <= 2 ms added")


async def bench_fetch(n: int) -> None:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html><body><p>ok</p></body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/"
    fetcher = Web(WebOptions(allow_private=True))
    context = httpx.create_ssl_context(trust_env=False)  # as Web keeps one: a fair baseline
    try:

        async def bare() -> object:
            async with httpx.AsyncClient(trust_env=False, verify=context) as client:
                return (await client.get(url)).text

        async def ours() -> object:
            return await fetcher.fetch(url)

        report("fetch", *await interleaved(bare, ours, n), "ms", "target: <= 2 ms added")
    finally:
        await runner.cleanup()


async def main(reads: int, commands: int, fetches: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        await bench_read(reads, root)
        await bench_shell(commands, root)
    await bench_fetch(fetches)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--fetches", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.reads, args.commands, args.fetches))
