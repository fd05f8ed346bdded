"""MCP servers of a real worker process on RabbitMQ and Redis: readiness waits for a server
started with connect=True; a call that needs approval pauses the run (suspended in Redis)
and runs once approved over HTTP; no server process outlives its worker, whether the worker
is stopped with SIGTERM or killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Cluster
from tests.integration.test_approvals_processes import decide, ended, paused, send
from tests.polling import eventually

APP = "tests.integration.mcp_app:daemon"
TOKEN = "approvals-test-token"
ROOT = Path(__file__).resolve().parents[2]


def servers(pidfile: Path, *, stubborn: bool = False) -> str:
    env = {"PYTHONPATH": str(ROOT), "MCP_FAKE_PIDFILE": str(pidfile)}
    if stubborn:
        env["MCP_FAKE_STUBBORN"] = "1"
    return json.dumps(
        [
            {
                "name": "fake",
                "command": sys.executable,
                "args": ["-m", "tests.fakes.mcp_server"],
                "cwd": str(ROOT),
                "env": env,
                "connect": True,
            }
        ]
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def gone(pid: int) -> None:
    async def dead() -> bool:
        return not alive(pid)

    await eventually(dead, f"MCP server process {pid} to exit", timeout=20)


@pytest.mark.timeout(180)
async def test_an_mcp_call_waits_for_approval_in_the_daemon(
    cluster: Cluster, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    env = {"LOOM_API_TOKEN": TOKEN, "LOOM_MCP_SERVERS": servers(pidfile)}
    gateway, _attention, worker = await cluster.start_ready(
        "gateway", "attention", "worker", app=APP, **env
    )
    (server_pid,) = [int(p) for p in pidfile.read_text().split()]  # started before ready
    async with httpx.AsyncClient() as client:
        ready = (await client.get(f"{worker.url}/readyz")).json()
    assert ready["checks"]["mcp:fake"] is True
    assert ready["capabilities"]["mcp:fake"]["degraded"] is False

    await send(cluster, "please add 20 22")
    checkpoint = await paused(cluster)
    assert [a.tool for a in checkpoint.pending] == ["mcp__fake__add"]
    answer = await decide(gateway, checkpoint, by="alice")
    assert answer.status_code == 200, answer.text
    record = await ended(cluster, checkpoint.run_id)
    assert record.status == "completed"
    assert json.loads(record.output) == {"result": 42}
    assert [int(p) for p in pidfile.read_text().split()] == [server_pid]  # no restart

    worker.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.popen.wait, 30) == 0
    await gone(server_pid)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
async def test_no_stubborn_server_nor_its_child_outlives_the_worker(
    cluster: Cluster, tmp_path: Path, sig: signal.Signals
) -> None:
    pidfile = tmp_path / "pids"
    stubborn = servers(pidfile, stubborn=True)
    (worker,) = await cluster.start_ready("worker", app=APP, LOOM_MCP_SERVERS=stubborn)
    server_pid, child_pid = [int(p) for p in pidfile.read_text().split()]
    assert alive(server_pid)
    assert alive(child_pid)
    worker.popen.send_signal(sig)
    await asyncio.to_thread(worker.popen.wait, 30)
    await gone(server_pid)
    await gone(child_pid)


@pytest.mark.timeout(120)
async def test_a_missing_command_fails_the_worker_start(cluster: Cluster) -> None:
    broken = json.dumps([{"name": "nope", "command": "no-such-mcp-server", "connect": True}])
    worker = cluster.start("worker", app=APP, LOOM_MCP_SERVERS=broken)
    code = await asyncio.to_thread(worker.popen.wait, 60)
    assert code != 0
    assert "'no-such-mcp-server' not found" in worker.output()
