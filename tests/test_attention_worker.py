"""Issue 19 in the daemon's worker (memory broker and state): observed signals start no
run, an interrupt cuts the model call in flight, and an interrupted run's signals go on to
the next run, marked as carried over."""

from __future__ import annotations

import asyncio

import pytest

from loom import Agent, Model, ModelResponse, RuntimeSignal
from loom.daemon.app import Daemon
from loom.policies.attention import AttentionPolicy
from loom.providers.base import ModelRequest
from loom.signals import Urgency
from loom.wire import publish_signal
from tests.test_daemon_memory import drain, settings

CARRIED_MARK = "(carried over from an interrupted run)"
CUT_SHORT = "[answer cut short: the run was interrupted]"


@pytest.fixture
async def daemon() -> Daemon:
    d = Daemon(Agent(Model.test(), "You watch alerts."), settings=settings())
    await d.start()
    yield d
    await d.stop()


def alert(text: str, *, urgency: Urgency = "high") -> RuntimeSignal:
    return RuntimeSignal.create(
        text, source="alertmanager", type="alert", urgency=urgency, session_id="ops"
    )


async def test_signals_observed_while_busy_start_no_run_of_their_own(daemon: Daemon) -> None:
    """Defect 1: the worker took observed signals and its "more work?" check counted them,
    so a run started on observed signals alone."""
    daemon.attention_consumer.policy = AttentionPolicy.from_rules(
        {"type": "alert", "busy": True, "action": "observe"}
    )
    gate, started = asyncio.Event(), asyncio.Event()
    inputs: list[str] = []
    working: list[str] = []

    async def model(request: ModelRequest) -> ModelResponse:
        inputs.append(request.last_user_text())
        working.append(request.instructions)
        started.set()
        await gate.wait()
        return ModelResponse(text="looked")

    daemon.agent.loop.provider = Model.function(model)
    await publish_signal(daemon.broker, alert("disk full on db-1"))
    await asyncio.wait_for(started.wait(), 5)
    for n in range(3):
        await publish_signal(daemon.broker, alert(f"disk full on db-{n + 2}"))
    await daemon.broker.join()  # type: ignore[attr-defined]
    gate.set()
    await drain(daemon)
    assert len(inputs) == 1  # the three observed alerts wait for a run something asks for
    assert len(await daemon.state.pending("ops")) == 3
    await publish_signal(daemon.broker, alert("status?", urgency="normal"))
    await drain(daemon)
    assert len(inputs) == 2
    # Observed: in the next run's working state, not repeated in its input.
    assert all(f"disk full on db-{n}" in working[1] for n in (2, 3, 4))
    assert "db-2" not in inputs[1]
    assert "3 observed signal(s) (alertmanager/alert 3)" in inputs[1]


async def test_an_interrupt_cuts_the_model_call_and_carries_the_signals_over(
    daemon: Daemon,
) -> None:
    """Defects 2 and 3: an interrupt waited for the model call in flight to finish, and the
    interrupted run's signals were marked finished instead of handed on."""
    started = asyncio.Event()
    cancelled = asyncio.Event()
    inputs: list[str] = []

    async def model(request: ModelRequest) -> ModelResponse:
        inputs.append(request.last_user_text())
        if len(inputs) == 1:
            started.set()
            try:
                await asyncio.sleep(30)  # a long answer: the page must not wait for it
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return ModelResponse(text="handled")

    daemon.agent.loop.provider = Model.function(model)
    await publish_signal(daemon.broker, alert("cpu high on web-1"))
    await asyncio.wait_for(started.wait(), 5)
    await publish_signal(daemon.broker, alert("prod down", urgency="critical"))
    await drain(daemon, timeout=10)  # far less than the 30 s call: it was cut
    assert cancelled.is_set()
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    assert [r.status for r in snapshot.runs] == ["interrupted", "completed"]
    assert len(inputs) == 2
    assert "prod down" in inputs[1]
    assert f"{CARRIED_MARK} [alertmanager/alert, urgency high] cpu high on web-1" in inputs[1]
    [page] = [line for line in inputs[1].splitlines() if line.endswith("prod down")][:1]
    assert CARRIED_MARK not in page  # the interrupting signal is new, not carried
    # The cut answer is in the history, marked; every turn is closed.
    texts = [m.content for m in snapshot.messages if m.role == "assistant"]
    assert CUT_SHORT in texts[0]
    assert await daemon.state.in_flight("ops") == []
    assert await daemon.state.pending("ops") == []
