"""The README's first commands on a fresh machine, run as written: ``uv run loom run`` (the
install steps before it are what ``.ci/run`` does), then, in another shell, ``loom send``
and ``curl`` of the session, which must show the signal handled by a completed run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import LOG_TAIL, ROOT
from tests.integration.test_readme_recipe import port_free, running
from tests.polling import eventually
from tests.services import in_ci

PORT = 8080
"""Where ``loom run`` listens on the embedded defaults (docs/daemon.md)."""


def fresh_machine_blocks() -> tuple[str, str]:
    """The daemon command (the last step of the install line) and the block that talks to
    it, from the README's section "On a fresh machine"."""
    section = (ROOT / "README.md").read_text().split("## On a fresh machine", 1)[1]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    assert len(blocks) >= 2, "the README's fresh-machine section lost its commands"
    install_and_run, talk = blocks[0].strip(), blocks[1].strip()
    daemon = install_and_run.rsplit("&&", 1)[-1].strip()
    assert daemon == "uv run loom run", install_and_run
    return daemon, talk


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_first_commands_of_the_readme_work_as_written(tmp_path: Path) -> None:
    missing = [tool for tool in ("uv", "curl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the README's commands use {', '.join(missing)}: not on PATH")
    if not port_free(PORT):
        message = f"port {PORT}, where `loom run` listens by default, is taken"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    daemon, talk = fresh_machine_blocks()
    log = tmp_path / "loom-run.log"

    def output() -> str:
        return log.read_text(errors="replace")[-LOG_TAIL:]

    with running(daemon, log) as process:
        async with httpx.AsyncClient(timeout=5.0) as client:

            async def ready() -> bool:
                assert process.poll() is None, f"`loom run` ended:\n{output()}"
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(f"http://127.0.0.1:{PORT}/readyz")).is_success
                return False

            await eventually(ready, "`loom run` to be ready", timeout=60)
        # The other shell: each command exactly as the README shows it.
        send, read = talk.splitlines()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LOOM_") and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
        }
        env["UV_NO_SYNC"] = "1"

        def shell(command: str) -> str:
            done = subprocess.run(
                ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, f"{command}: {done.stderr}"
            return done.stdout

        accepted = json.loads(shell(send))
        assert accepted["status"] == "accepted", accepted

        async def handled() -> dict[str, object] | None:
            session: dict[str, object] = json.loads(shell(read))
            runs = session["runs"]
            assert isinstance(runs, list)
            return session if any(run["status"] == "completed" for run in runs) else None

        session = await eventually(handled, "the session to show a completed run", timeout=30)
        assert session["session_id"] == "ops"
        decisions = session["decisions"]
        assert isinstance(decisions, list)
        assert [d["signal_id"] for d in decisions] == [accepted["id"]]
        assert "deploy 42 failed on staging" in json.dumps(session["runs"])
