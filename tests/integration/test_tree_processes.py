"""A sub-agent's approval suspends and resumes the whole run tree across real processes on
RabbitMQ and Redis: the worker suspends the tree (no slot, no lease), is killed with
SIGKILL (or every process is restarted) before the decision, the decision is taken over
HTTP, and another worker resumes the child from its checkpoint; the child's tool effect,
counted in a file outside Redis, happens exactly once, and the lead's final answer is the
session's reply. A denial is the child's tool error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from loom.core.checkpoints import RunCheckpoint
from tests.integration.conftest import Cluster, Proc
from tests.integration.test_approvals_processes import (
    TOKEN,
    decide,
    effects_of,
    ended,
    env,
    kill_9,
    pids_of,
    send,
)
from tests.polling import eventually

APP = "tests.integration.tree_app:daemon"


async def suspended_tree(c: Cluster, session: str = "ops") -> RunCheckpoint:
    """The tree's checkpoint once its worker let go of it (no lease)."""

    async def found() -> RunCheckpoint | None:
        checkpoint = await c.state.suspensions.load(session)
        if checkpoint is None or not checkpoint.children:
            return None
        return checkpoint if await c.state.lease_holder(session) is None else None

    checkpoint: RunCheckpoint = await eventually(found, "the tree to be suspended", timeout=60)
    return checkpoint


async def session(gateway: Proc, session_id: str = "ops") -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(
            f"{gateway.url}/sessions/{session_id}", headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


async def _ran(effects: Path) -> bool:
    return bool(effects_of(effects))


@pytest.mark.timeout(240)
async def test_kill_9_of_the_suspending_worker_then_a_decision_over_http(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    gateway, _attention, first = await cluster.start_ready(
        "gateway", "attention", "worker", app=APP, **env(effects)
    )
    await send(cluster, "please restart api")
    checkpoint = await suspended_tree(cluster)
    (approval,) = checkpoint.pending
    assert (approval.tool, approval.arguments) == ("restart", {"service": "api"})
    (child,) = checkpoint.children.values()
    assert approval.run_id == child.run_id != checkpoint.run_id
    kill_9(first)

    view = await session(gateway)
    assert [a["id"] for a in view["approvals"]] == [approval.id]
    assert view["awaiting_run"] == checkpoint.run_id
    (second,) = await cluster.start_ready("worker", app=APP, **env(effects))
    answer = await decide(gateway, checkpoint, by="alice")
    assert answer.status_code == 200, answer.text

    record = await ended(cluster, checkpoint.run_id)
    assert record.status == "completed"
    assert record.output == "lead: fixer: api restarted"
    assert effects_of(effects) == ["restart api"]  # exactly once
    assert pids_of(effects) == [second.pid]
    view = await session(gateway)
    assert view["last_reply"] == "lead: fixer: api restarted"
    assert view["approvals"] == []


@pytest.mark.timeout(300)
async def test_every_process_restarted_and_the_resuming_worker_killed_mid_call(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    slow = env(effects, LOOM_TEST_TOOL_SECONDS="30")
    procs = await cluster.start_ready("gateway", "attention", "worker", app=APP, **slow)
    await send(cluster, "please restart slow-db")
    checkpoint = await suspended_tree(cluster)
    for proc in procs:
        kill_9(proc)

    gateway, _, second = await cluster.start_ready(
        "gateway", "attention", "worker", app=APP, **slow
    )
    answer = await decide(gateway, checkpoint)
    assert answer.status_code == 200, answer.text
    await eventually(lambda: _ran(effects), "the approved call to start", timeout=60)
    kill_9(second)  # while the child's approved call runs (its effect done, its result not)

    (third,) = await cluster.start_ready("worker", app=APP, **slow)
    record = await ended(cluster, checkpoint.run_id, timeout=120)
    assert effects_of(effects) == ["restart slow-db"]  # exactly once
    assert pids_of(effects) == [second.pid]
    assert record.status == "completed"
    assert record.output.startswith("lead: fixer: outcome unknown")
    assert third.popen.poll() is None


@pytest.mark.timeout(240)
async def test_a_denial_over_http_is_the_childs_tool_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    gateway, _attention, first = await cluster.start_ready(
        "gateway", "attention", "worker", app=APP, **env(effects)
    )
    await send(cluster, "please restart web")
    checkpoint = await suspended_tree(cluster)
    kill_9(first)
    await cluster.start_ready("worker", app=APP, **env(effects))

    answer = await decide(gateway, checkpoint, "deny", message="not in the freeze", by="bob")
    assert answer.status_code == 200, answer.text
    record = await ended(cluster, checkpoint.run_id)
    assert record.status == "completed"
    assert record.output.startswith("lead: fixer: tool call not run: denied by api:bob")
    assert "not in the freeze" in record.output
    assert effects_of(effects) == []


@pytest.mark.timeout(300)
async def test_kill_9_during_the_hold_while_a_sibling_worked(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The fixer waits for approval, held by the worker; its sibling, the scribe, notes
    (an effect) and is in its next model turn when the worker is killed. Resumed elsewhere,
    the scribe goes on from the tree's checkpoint: its note is not written again."""
    effects = tmp_path / "effects"
    held = env(effects, LOOM_APPROVALS__HOLD="600", LOOM_WORKER__LEASE_TTL="3")
    gateway, _attention, first = await cluster.start_ready(
        "gateway", "attention", "worker", app=APP, **held, LOOM_TEST_SCRIBE_SECONDS="600"
    )
    await send(cluster, "please restart api and note api")

    async def waiting() -> bool:
        return "scribe waiting" in effects_of(effects)

    await eventually(waiting, "the scribe to have noted", timeout=60)
    checkpoint = await cluster.state.suspensions.load("ops")
    assert checkpoint is not None
    assert checkpoint.pending
    assert await cluster.state.lease_holder("ops") is not None  # held, not suspended
    kill_9(first)

    (second,) = await cluster.start_ready("worker", app=APP, **held)
    answer = await decide(gateway, checkpoint, by="alice")
    assert answer.status_code == 200, answer.text
    record = await ended(cluster, checkpoint.run_id, timeout=120)
    assert record.status == "completed", record.error
    assert record.output == "lead: fixer: api restarted + scribe: noted api"
    notes = [e for e in effects_of(effects) if e.startswith("note")]
    assert notes == ["note api"]  # exactly once
    assert effects_of(effects).count("restart api") == 1
    assert second.popen.poll() is None
