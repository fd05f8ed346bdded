"""Durable approvals across real processes on RabbitMQ and Redis: decided over HTTP and the
CLI (a signed Slack button: test_approvals_slack.py); resumed by a worker other than the one
that paused the run; kill -9 while the run waits and while the approved call runs (its
effect, counted in a file outside Redis, happens exactly once); every process restarted
before the decision; one rate limit held across three workers."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from loom import RuntimeSignal
from loom.core.checkpoints import RunCheckpoint
from loom.wire import publish_signal
from tests.integration.conftest import Cluster, Proc
from tests.polling import eventually

APP = "tests.integration.approvals_app:daemon"
TOKEN = "approvals-test-token"


def env(effects: Path, **extra: str) -> dict[str, str]:
    return {"LOOM_TEST_EFFECTS": str(effects), "LOOM_API_TOKEN": TOKEN, **extra}


def effects_of(path: Path) -> list[str]:
    """The effects recorded, without the pid that made each."""
    if not path.exists():
        return []
    return [line.rsplit(" ", 1)[0] for line in path.read_text().splitlines()]


def pids_of(path: Path) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in path.read_text().splitlines()]


async def send(c: Cluster, text: str, session: str = "ops") -> RuntimeSignal:
    signal_ = RuntimeSignal.create(text, session_id=session)
    await publish_signal(c.broker, signal_)
    return signal_


async def paused(c: Cluster, session: str = "ops", *, timeout: float = 30) -> RunCheckpoint:
    async def found() -> RunCheckpoint | None:
        return await c.state.suspensions.load(session)

    checkpoint: RunCheckpoint = await eventually(found, "the run to pause", timeout=timeout)
    return checkpoint


async def ended(c: Cluster, run_id: str, session: str = "ops", timeout: float = 60) -> Any:
    async def found() -> Any:
        snapshot = await c.state.sessions.load(session)
        records = [r for r in snapshot.runs if r.run_id == run_id] if snapshot else []
        return records[0] if records else None

    return await eventually(found, f"run {run_id} to end", timeout=timeout)


async def decide(
    gateway: Proc, checkpoint: RunCheckpoint, decision: str = "approve", **body: Any
) -> httpx.Response:
    (approval,) = checkpoint.pending
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{gateway.url}/sessions/{checkpoint.session_id}/approvals/{approval.id}",
            json={"decision": decision, "digest": approval.digest, **body},
            headers={"authorization": f"Bearer {TOKEN}"},
        )


def kill_9(proc: Proc) -> None:
    proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait(10)


@pytest.mark.timeout(180)
async def test_a_decision_over_http_resumes_the_run_on_another_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    gateway, _attention, first = await cluster.start_ready(
        "gateway", "attention", "worker", app=APP, **env(effects)
    )
    await send(cluster, "please restart api")
    checkpoint = await paused(cluster)
    await eventually(
        lambda: _no_lease(cluster), "the suspended run to let go of its lease", timeout=30
    )

    # The worker that paused the run goes away; another one takes the decision's signal.
    first.popen.send_signal(signal.SIGTERM)
    await asyncio.to_thread(first.popen.wait, 30)
    (second,) = await cluster.start_ready("worker", app=APP, **env(effects))
    view = await _session(gateway)
    assert [a["id"] for a in view["approvals"]] == [checkpoint.pending[0].id]

    answer = await decide(gateway, checkpoint, by="alice")
    assert answer.status_code == 200, answer.text
    record = await ended(cluster, checkpoint.run_id)

    assert record.status == "completed"
    assert record.output == "api restarted"
    assert effects_of(effects) == ["restart api"]
    assert pids_of(effects) == [second.pid]
    await eventually(lambda: _forgotten(cluster), "the ended run's checkpoint to go", timeout=10)
    again = await decide(gateway, checkpoint, "deny")
    assert again.status_code == 409
    assert "already decided: approve by api:alice" in again.json()["error"]


@pytest.mark.timeout(180)
async def test_the_cli_decides_on_redis(cluster: Cluster, tmp_path: Path) -> None:
    effects = tmp_path / "effects"
    await cluster.start_ready("attention", "worker", app=APP, **env(effects))
    await send(cluster, "please restart db")
    checkpoint = await paused(cluster)
    (approval,) = checkpoint.pending

    code, _, err = await cluster.cli("approve", "ops", "apr_unknown")
    assert code == 1
    assert "waits for no approval" in err
    code, out, err = await cluster.cli(
        "approve", "ops", approval.id, "--deny", "--message", "not during the freeze"
    )
    assert code == 0, err
    assert json.loads(out)["approval"]["decision"] == "deny"

    record = await ended(cluster, checkpoint.run_id)
    assert record.status == "completed"
    assert "not during the freeze" in record.output
    assert effects_of(effects) == []


@pytest.mark.timeout(240)
async def test_kill_9_while_waiting_and_while_the_approved_call_runs(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    held = env(effects, LOOM_APPROVALS__HOLD="60", LOOM_TEST_TOOL_SECONDS="30")
    gateway, _ = await cluster.start_ready("gateway", "attention", app=APP, **held)
    (first,) = await cluster.start_ready("worker", app=APP, **held)
    await send(cluster, "please restart slow-api")
    checkpoint = await paused(cluster)
    kill_9(first)  # while the run is held, waiting for a decision

    (second,) = await cluster.start_ready("worker", app=APP, **held)
    answer = await decide(gateway, checkpoint)
    assert answer.status_code == 200, answer.text
    await eventually(lambda: _ran(effects), "the approved call to start", timeout=60)
    kill_9(second)  # while the approved call runs (its effect done, its result not)

    (third,) = await cluster.start_ready("worker", app=APP, **held)
    record = await ended(cluster, checkpoint.run_id, timeout=90)

    assert effects_of(effects) == ["restart slow-api"]  # exactly once
    assert pids_of(effects) == [second.pid]
    assert record.status == "completed"
    assert "outcome unknown" in record.output
    assert third.popen.poll() is None


@pytest.mark.timeout(240)
async def test_every_process_restarted_before_the_decision(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    procs = await cluster.start_ready("gateway", "attention", "worker", app=APP, **env(effects))
    await send(cluster, "please restart web")
    checkpoint = await paused(cluster)
    for proc in procs:
        kill_9(proc)

    gateway, _, _ = await cluster.start_ready(
        "gateway", "attention", "worker", app=APP, **env(effects)
    )
    answer = await decide(gateway, checkpoint)
    assert answer.status_code == 200, answer.text
    record = await ended(cluster, checkpoint.run_id)
    assert record.status == "completed"
    assert effects_of(effects) == ["restart web"]


@pytest.mark.timeout(240)
async def test_a_rate_limit_holds_across_three_workers(cluster: Cluster, tmp_path: Path) -> None:
    effects = tmp_path / "effects"
    await cluster.start_ready("attention", "worker", "worker", "worker", app=APP, **env(effects))
    sent = [await send(cluster, f"please ping host{i}", session=f"s{i}") for i in range(30)]

    async def all_ended() -> bool:
        for index in range(len(sent)):
            snapshot = await cluster.state.sessions.load(f"s{index}")
            if snapshot is None or not snapshot.runs:
                return False
        return True

    await eventually(all_ended, "every ping run to end", timeout=120)
    pings = [line for line in effects_of(effects) if line.startswith("ping")]
    assert len(pings) == 10  # 10/minute, shared by the three workers
    assert len(set(pids_of(effects))) >= 2  # the workers really shared the work
    outputs = []
    for index in range(len(sent)):
        snapshot = await cluster.state.sessions.load(f"s{index}")
        assert snapshot is not None
        outputs.append(snapshot.runs[0].output)
    assert sum("rate limit" in output for output in outputs) == 20


async def _no_lease(c: Cluster) -> bool:
    return await c.state.lease_holder("ops") is None


async def _forgotten(c: Cluster) -> bool:
    return await c.state.suspensions.load("ops") is None


async def _ran(effects: Path) -> bool:
    return bool(effects_of(effects))


async def _session(gateway: Proc) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(
            f"{gateway.url}/sessions/ops", headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


@pytest.mark.timeout(240)
async def test_kill_9_while_a_held_run_runs_its_approved_call(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    held = env(effects, LOOM_APPROVALS__HOLD="60", LOOM_TEST_TOOL_SECONDS="30")
    gateway, _ = await cluster.start_ready("gateway", "attention", app=APP, **held)
    (first,) = await cluster.start_ready("worker", app=APP, **held)
    await send(cluster, "please restart slow-db")
    checkpoint = await paused(cluster)

    answer = await decide(gateway, checkpoint)  # the worker still holds the run
    assert answer.status_code == 200, answer.text
    await eventually(lambda: _ran(effects), "the approved call to start", timeout=60)
    assert pids_of(effects) == [first.pid]  # resumed in the process that held it
    kill_9(first)

    await cluster.start_ready("worker", app=APP, **held)
    record = await ended(cluster, checkpoint.run_id, timeout=90)
    assert effects_of(effects) == ["restart slow-db"]  # exactly once
    assert record.status == "completed"
    assert "outcome unknown" in record.output


@pytest.mark.timeout(240)
async def test_sigterm_suspends_a_held_run_instead_of_cancelling_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    held = env(effects, LOOM_APPROVALS__HOLD="60")
    gateway, _ = await cluster.start_ready("gateway", "attention", app=APP, **held)
    (first,) = await cluster.start_ready("worker", app=APP, **held)
    await send(cluster, "please restart cache")
    checkpoint = await paused(cluster)

    first.popen.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(first.popen.wait, 30)
    assert code == 0
    assert await cluster.state.suspensions.load("ops") is not None  # still waiting
    snapshot = await cluster.state.sessions.load("ops")
    assert snapshot is None or not snapshot.runs  # not ended as cancelled

    await cluster.start_ready("worker", app=APP, **held)
    answer = await decide(gateway, checkpoint)
    assert answer.status_code == 200, answer.text
    record = await ended(cluster, checkpoint.run_id)
    assert record.status == "completed"
    assert effects_of(effects) == ["restart cache"]
