"""Capability.shell: approval through governance, scrubbed environment, process groups
ended on timeout, cancel and interrupt, output kept as head and tail."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, Capability, GovernancePolicy, Runtime
from loom.runtime.run import RunStatus
from loom.tools.context import ToolContext
from loom.tools.shell import OutputBuffer, Shell, ShellOptions, scrubbed_environment
from tests.capability_helpers import Script


def shell(tmp_path: Path, **options: Any) -> Shell:
    return Shell(tmp_path, ShellOptions(**options))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): it is dead, waiting only for its parent to reap it.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def gone(pid: int) -> bool:
    # Up to 10 s: a killed process is gone at once on an idle machine, but it must be
    # scheduled to exit, which on a loaded one (a suite beside a soak) once took over 2 s.
    for _ in range(500):
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_runs_in_its_directory_and_reports_the_exit_code(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("x")
    out = await shell(tmp_path).run("ls; echo oops >&2; exit 3")
    assert out.splitlines()[0] == "exit code 3"
    assert "marker.txt" in out
    assert "oops" in out


async def test_no_stdin(tmp_path: Path) -> None:
    out = await shell(tmp_path, timeout=5).run("cat; echo read-done")
    assert out == "exit code 0\nread-done\n"


async def test_the_environment_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "LOOM_API_TOKEN": "s1",
        "LOOM_STATE_URL": "redis://x",
        "ANTHROPIC_API_KEY": "s2",
        "GITHUB_TOKEN": "s3",
        "DB_PASSWORD": "s4",
        "AWS_SECRET_ACCESS_KEY": "s5",
        "SESSION_COOKIE": "s6",
        "DATABASE_URL": "postgres://app:s7@db/app",
        "PLAIN_SETTING": "visible",
    }.items():
        monkeypatch.setenv(name, value)
    out = await shell(tmp_path, env={"EXTRA": "given"}).run("env")
    assert "PLAIN_SETTING=visible" in out
    assert "EXTRA=given" in out
    assert "PATH=" in out
    assert not re.search(r"\bs[1-7]\b", out)
    assert "LOOM_" not in out


def test_scrubbing_is_by_name_and_by_password_in_url() -> None:
    env = scrubbed_environment(
        {"HOME": "/root", "MY_PRIVATE_KEY": "k", "X": "https://u:p@h/", "Y": "https://h/"}
    )
    assert env == {"HOME": "/root", "Y": "https://h/"}


async def test_a_timeout_ends_the_whole_process_group(tmp_path: Path) -> None:
    """The command starts a grandchild that ignores SIGTERM and would outlive the shell."""
    command = "(trap '' TERM; sleep 30) & echo grandchild $!; sleep 30"
    out = await shell(tmp_path, timeout=0.5).run(command)
    assert out.startswith("timed out after 0.5s; exit code")
    pid = int(re.search(r"grandchild (\d+)", out).group(1))  # type: ignore[union-attr]
    assert await gone(pid)


async def test_cancelling_the_call_ends_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(
        shell(tmp_path, timeout=30).run(f"(trap '' TERM; sleep 30) & echo $! > {pid_file}; wait")
    )
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(pid)


async def test_an_interrupted_run_ends_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    flag = asyncio.Event()
    context = ToolContext(run_id="r", session_id="s", tool_call_id="c", interrupted=flag.is_set)
    task = asyncio.create_task(
        shell(tmp_path, timeout=30).run(
            f"(trap '' TERM; sleep 30) & echo $! > {pid_file}; wait", context
        )
    )
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    flag.set()
    out = await task
    assert out.startswith("interrupted; exit code")
    assert await gone(pid)


async def test_a_finished_command_leaves_nothing_running(tmp_path: Path) -> None:
    out = await shell(tmp_path, timeout=10).run("sleep 30 > /dev/null 2>&1 & echo $!")
    assert out.startswith("exit code 0")
    assert await gone(int(out.splitlines()[1]))


async def test_output_keeps_head_and_tail_within_the_cap(tmp_path: Path) -> None:
    out = await shell(tmp_path, max_output_bytes=200).run("echo START; seq 1 100000; echo END")
    body = out.split("\n", 1)[1]
    assert body.startswith("START\n1\n2\n")
    assert body.endswith("99999\n100000\nEND\n")
    assert "bytes of output omitted" in body
    assert len(body) < 300


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_hundred_megabytes_of_output_keeps_memory_flat(tmp_path: Path) -> None:
    sh = shell(tmp_path, timeout=60)
    await sh.run("head -c 1000000 /dev/zero | tr '\\0' x")  # warm up buffers
    before = rss_kib()
    out = await sh.run("head -c 100000000 /dev/zero | tr '\\0' x")
    growth = rss_kib() - before
    assert "99934464 bytes of output omitted" in out
    assert growth < 10 * 1024, f"RSS grew by {growth} KiB"


def test_output_buffer_counts_what_it_drops() -> None:
    buffer = OutputBuffer(10)
    for chunk in (b"abc", b"defgh", b"ijklmnop"):
        buffer.add(chunk)
    assert buffer.text() == "abcde\n[... 6 bytes of output omitted ...]\nlmnop"


def test_allow_patterns_skip_approval_only_for_plain_commands(tmp_path: Path) -> None:
    tool = Capability.shell(allow=[r"kubectl get pods( -n [a-z-]+)?", r"uptime"], cwd=tmp_path)
    [run_command] = tool.tools()
    rule = run_command.requires_approval
    assert callable(rule)
    assert run_command.destructive

    def needs(command: str) -> bool:
        return bool(rule(run_command.call_info({"command": command})))  # type: ignore[operator]

    assert not needs("uptime")
    assert not needs("kubectl get pods -n web")
    assert needs("kubectl delete pods")
    assert needs("uptime; rm -rf /")
    assert needs("uptime && curl evil")
    assert needs("kubectl get pods -n $(rm -rf /)")
    assert needs("uptime\nrm x")
    off = Capability.shell(require_approval=False, cwd=tmp_path).tools()[0]
    assert off.requires_approval is False


def test_configuration_errors_fail_at_build(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Capability.shell(cwd=tmp_path / "nope")
    with pytest.raises(ValueError, match="not a regular expression"):
        Capability.shell(allow=["("], cwd=tmp_path)


async def test_the_run_waits_for_approval_of_the_exact_command(tmp_path: Path) -> None:
    command = "echo restarted > done.txt; echo ok"
    script = Script([[("run_command", {"command": command})], "finished"])
    agent = Agent(
        script.model,
        capabilities=[Capability.shell(cwd=tmp_path)],
        runtime=Runtime(governance=GovernancePolicy.default(allow_destructive=True)),
    )
    run = agent.session("ops").start("restart it")
    result = await run.wait()
    assert result.status is RunStatus.AWAITING_APPROVAL
    [approval] = result.approvals
    assert approval.tool == "run_command"
    assert approval.arguments == {"command": command}
    assert not (tmp_path / "done.txt").exists()
    run.approve(approval.id, "go", by="alice")
    result = await run.wait()
    assert result.status is RunStatus.COMPLETED
    assert (tmp_path / "done.txt").read_text() == "restarted\n"
    assert script.tool_results() == ["exit code 0\nok\n"]


async def test_the_default_governance_asks_before_the_destructive_shell(tmp_path: Path) -> None:
    script = Script([[("run_command", {"command": "touch x"})], "finished"])
    agent = Agent(script.model, capabilities=[Capability.shell(cwd=tmp_path)])
    run = agent.session("ops").start("go")
    paused = await run.wait()
    assert paused.status is RunStatus.AWAITING_APPROVAL  # asked, not refused
    run.deny(paused.approvals[0].id, "no")
    assert (await run.wait()).ok
    assert not (tmp_path / "x").exists()


async def test_without_approval_the_default_governance_denies_the_shell(tmp_path: Path) -> None:
    script = Script([[("run_command", {"command": "touch x"})], "finished"])
    agent = Agent(
        script.model, capabilities=[Capability.shell(require_approval=False, cwd=tmp_path)]
    )
    result = await agent.run("go")
    assert result.ok
    [shown] = script.tool_results()
    assert "denied (destructive)" in shown
    assert not (tmp_path / "x").exists()


async def test_interrupting_the_run_ends_the_command_it_is_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    command = f"(trap '' TERM; sleep 30) & echo $! > {pid_file}; wait"
    script = Script([[("run_command", {"command": command})], "finished"])
    agent = Agent(
        script.model,
        capabilities=[Capability.shell(require_approval=False, cwd=tmp_path)],
        runtime=Runtime(governance=GovernancePolicy.allow_all()),
    )
    run = agent.session("ops").start("go")
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    run.interrupt("a page came in")
    result = await asyncio.wait_for(run.wait(), 10)
    assert result.status is RunStatus.INTERRUPTED
    assert await gone(pid)
