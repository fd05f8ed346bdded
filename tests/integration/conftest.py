"""Loom processes on the real RabbitMQ and Redis, one namespace per test.

The ``cluster`` fixture gives a test its own namespace (queues, exchanges, Redis keys), a
started ``RabbitMQBroker`` and ``RedisState`` on it for publishing and inspecting, and
``start()`` for role processes (``python -m loom <role> tests.integration.app:daemon``).
Every process is killed at teardown, pass or fail, and the namespace is deleted; when a
test fails, the processes' logs are attached to its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from loom.broker.rabbitmq import RabbitMQBroker
from loom.state.redis_state import RedisState
from loom.wire import TOPOLOGY
from tests.services import delete_redis_keys, require_rabbitmq, require_redis

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.app:daemon"
LOG_TAIL = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """One Loom process: its role, HTTP port and log file (stdout and stderr)."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class Cluster:
    """The processes of one test, sharing its namespace."""

    def __init__(self, namespace: str, rabbitmq_url: str, redis_url: str, logs: Path) -> None:
        self.namespace = namespace
        self.rabbitmq_url = rabbitmq_url
        self.redis_url = redis_url
        self.logs = logs
        self.procs: list[Proc] = []
        self.broker = RabbitMQBroker(rabbitmq_url, topology=TOPOLOGY, namespace=namespace)
        # The daemon's own prefix for a namespace (see loom.daemon.app.state_options).
        self.state = RedisState(redis_url, prefix=f"{namespace}:loom")
        self.defaults: dict[str, str] = {
            "LOOM_BROKER_URL": rabbitmq_url,
            "LOOM_STATE_URL": redis_url,
            "LOOM_NAMESPACE": namespace,
            "LOOM_WORKER__LEASE_TTL": "3",
            "LOOM_WORKER__SWEEP_INTERVAL": "0.2",
            "LOOM_SHUTDOWN_TIMEOUT": "5",
            "LOOM_TEST_MODEL_DELAY": "0.05",
            "LOOM_TEST_SLOW_WORD": "SLOWTASK",
            "LOOM_TEST_SLOW_SECONDS": "4",
        }

    def env(self, **overrides: str) -> dict[str, str]:
        # Nothing of the caller's own LOOM_* settings leaks into a test process.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
        env.update(self.defaults)
        env.update(overrides)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, role: str, *, app: str | None = APP, **env: str) -> Proc:
        """Start ``python -m loom <role> [app]`` on a free port; does not wait for it."""
        port = int(env.pop("LOOM_HTTP__PORT", 0)) or free_port()
        name = f"{role}-{len(self.procs) + 1}"
        log = self.logs / f"{name}.log"
        args = [sys.executable, "-m", "loom", role, *([app] if app else [])]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args,
                cwd=ROOT,
                env=self.env(LOOM_HTTP__PORT=str(port), **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, port, log)
        self.procs.append(proc)
        return proc

    async def wait_ready(self, proc: Proc, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.popen.poll() is not None:
                    raise AssertionError(
                        f"{proc.name} exited with {proc.popen.returncode} before it was "
                        f"ready:\n{proc.output()[-LOG_TAIL:]}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{proc.url}/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{proc.name} not ready after {timeout:g}s:\n{proc.output()[-LOG_TAIL:]}"
                    )
                await asyncio.sleep(0.1)

    async def start_ready(self, *roles: str, **env: str) -> list[Proc]:
        """Start one process per role and wait until every one is ready."""
        procs = [self.start(role, **env) for role in roles]
        for proc in procs:
            await self.wait_ready(proc)
        return procs

    async def cli(self, *args: str, timeout: float = 60.0, **env: str) -> tuple[int, str, str]:
        """Run ``python -m loom ARGS`` to completion: (exit code, stdout, stderr)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loom", *args,
            cwd=ROOT,
            env=self.env(**env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)

    def report(self) -> str:
        parts = []
        for proc in self.procs:
            code = proc.popen.poll()
            status = "running" if code is None else f"exit code {code}"
            parts.append(
                f"===== {proc.name} (pid {proc.pid}, port {proc.port}, {status}) =====\n"
                f"{proc.output()[-LOG_TAIL:]}"
            )
        return "\n".join(parts) or "(no processes)"


@pytest.fixture
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    rabbitmq_url = require_rabbitmq()
    redis_url = require_redis()
    namespace = f"it-{secrets.token_hex(4)}"
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Cluster(namespace, rabbitmq_url, redis_url, logs)
    request.node.loom_cluster = c
    try:
        await c.broker.start()
        await c.state.start()
        yield c
    finally:
        c.kill_all()
        with contextlib.suppress(Exception):
            await c.broker.delete_topology()
        await c.broker.close()
        await c.state.close()
        await delete_redis_keys(redis_url, f"{namespace}:")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    c: Cluster | None = getattr(item, "loom_cluster", None)
    if c is not None and report.failed and report.when in ("setup", "call"):
        report.sections.append(("loom process logs", c.report()))
