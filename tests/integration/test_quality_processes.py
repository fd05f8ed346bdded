"""A long-running harness across real processes on RabbitMQ and Redis: kill -9 of the
worker between sprints, and the run resumes at the next sprint on another worker without
repeating the earlier sprint's tool call."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom import RuntimeSignal
from loom.core.checkpoints import RunCheckpoint
from loom.wire import publish_signal
from tests.integration.conftest import Cluster
from tests.integration.test_approvals_processes import ended, kill_9
from tests.polling import eventually

APP = "tests.integration.quality_app:daemon"


@pytest.mark.timeout(180)
async def test_kill_9_between_sprints_resumes_at_the_next_sprint(
    cluster: Cluster, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    env = {"LOOM_TEST_EFFECTS": str(effects), "LOOM_TEST_SPRINT_SECONDS": "60"}
    await cluster.start_ready("attention", app=APP, **env)
    (first,) = await cluster.start_ready("worker", app=APP, **env)
    await publish_signal(cluster.broker, RuntimeSignal.create("probe it", session_id="ops"))

    async def boundary() -> RunCheckpoint | None:
        checkpoint = await cluster.state.suspensions.load("ops")
        slept = effects.with_suffix(".slept").exists()
        return checkpoint if checkpoint is not None and slept else None

    checkpoint = await eventually(boundary, "sprint 2 to begin", timeout=60)
    assert checkpoint.metadata["sprint"] == 2
    assert checkpoint.transcript[-1].role == "user"  # the unmet criterion, sent back
    kill_9(first)  # between sprints: sprint 1 is done and judged, sprint 2 not begun

    (second,) = await cluster.start_ready("worker", app=APP, **env)
    record = await ended(cluster, checkpoint.run_id, timeout=90)

    lines = [line.split() for line in effects.read_text().splitlines()]
    assert [(what, sprint) for what, sprint, _ in lines] == [("probe", "1"), ("probe", "2")]
    assert [int(pid) for *_, pid in lines] == [first.pid, second.pid]
    assert record.status == "completed", record.error
    assert record.metadata["sprint"] == 2

    async def forgotten() -> bool:  # the worker stores the end, then forgets the checkpoint
        return await cluster.state.suspensions.load("ops") is None

    await eventually(forgotten, "the checkpoint to be forgotten", timeout=30)
