"""The README's "Running on RabbitMQ and Redis" recipe, run as written on one machine.

The block is read from README.md and run by bash, unchanged but for ``LOOM_NAMESPACE`` set
before it (this test's queues and keys) and the test services' URLs if they differ from the
README's. The roles listen on their default ports, so those must be free.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import LOG_TAIL, ROOT, Cluster
from tests.polling import eventually
from tests.services import in_ci

PORTS = {"gateway": 8080, "attention": 8082, "worker": 8083}
"""The recipe's roles and the default port each listens on (docs/daemon.md)."""


def recipe() -> str:
    """The first bash block of the README's section "Running on RabbitMQ and Redis"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running on RabbitMQ and Redis", 1)[1]
    found = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert found, "no bash block in the README's RabbitMQ and Redis section"
    return found.group(1)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def running(script: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``bash -c script`` in a process group of its own, stopped (the whole group) after."""
    # Nothing of the caller's settings or provider keys: the offline model answers.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOOM_") and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
    }
    env.update(PYTHONUNBUFFERED="1", UV_NO_SYNC="1")  # the suite's environment, as it is
    with log.open("wb") as out:
        shell = subprocess.Popen(
            ["bash", "-c", script],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield shell
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                shell.wait(timeout=wait)
                break


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_the_readme_recipe_runs_on_one_machine(cluster: Cluster, tmp_path: Path) -> None:
    if shutil.which("uv") is None:
        pytest.skip("the recipe runs `uv run loom ...`: uv is not on PATH")
    busy = [f"{role} ({port})" for role, port in PORTS.items() if not port_free(port)]
    if busy:
        message = f"the recipe's default ports are taken: {', '.join(busy)}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    block = recipe()
    assert [role for role in PORTS if f"loom {role}" in block] == list(PORTS)
    # The README's own service URLs give way to the test's (LOOM_TEST_*_URL).
    for name, url in (
        ("LOOM_BROKER_URL", cluster.rabbitmq_url),
        ("LOOM_STATE_URL", cluster.redis_url),
    ):
        written = re.search(rf"{name}=(\S+)", block)
        assert written, f"the recipe sets no {name}"
        block = block.replace(written.group(0), f"{name}={url}")
    log = tmp_path / "recipe.log"

    def output() -> str:
        return log.read_text(errors="replace")[-LOG_TAIL:]

    with running(f"export LOOM_NAMESPACE={cluster.namespace}\n{block}", log) as shell:
        async with httpx.AsyncClient(timeout=5.0) as client:

            async def ready() -> bool:
                assert shell.poll() is None, f"the recipe ended:\n{output()}"
                assert "cannot listen" not in output(), output()
                for port in PORTS.values():
                    with contextlib.suppress(httpx.HTTPError):
                        answer = await client.get(f"http://127.0.0.1:{port}/readyz")
                        if answer.status_code == 200:
                            continue
                    return False
                return True

            await eventually(ready, "the recipe's three roles to be ready", timeout=90)
            session = f"readme-{secrets.token_hex(4)}"
            gateway = f"http://127.0.0.1:{PORTS['gateway']}"
            sent = await client.post(
                f"{gateway}/signals",
                json={
                    "source": "readme",
                    "type": "message",
                    "summary": "hello",
                    "session_id": session,
                },
            )
            assert sent.status_code == 202, sent.text
            signal_id = sent.json()["id"]

            async def completed() -> dict[str, Any] | None:
                answer = await client.get(f"{gateway}/sessions/{session}")
                if answer.status_code != 200:
                    return None
                for run in answer.json()["runs"]:
                    if run["status"] == "completed" and signal_id in run["metadata"]["signals"]:
                        return dict(run)
                return None

            run = await eventually(completed, f"a completed run of {signal_id}", timeout=60)
            assert "hello" in run["output"]
