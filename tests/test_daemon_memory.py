"""The daemon's flow in one process: memory broker and state, real consumers and workers."""

from __future__ import annotations

import asyncio
import json

import pytest

from loom import Agent, Model, ModelResponse, RuntimeSignal
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.providers.base import ModelRequest
from loom.wire import decision_view, publish_signal


def settings(**overrides: object) -> Settings:
    return Settings(
        broker_url="memory://",
        state_url="memory://",
        worker={"lease_ttl": 2.0, "sweep_interval": 0.05},
        **overrides,  # type: ignore[arg-type]
    )


async def drain(daemon: Daemon, timeout: float = 5.0) -> None:
    """Wait until the broker is empty and no session has work or a run going."""
    async with asyncio.timeout(timeout):
        while True:
            await daemon.broker.join()  # type: ignore[attr-defined]
            await daemon.worker.run_until_idle()
            if not await daemon.state.ready_sessions() and not daemon.worker.active_sessions:
                return


@pytest.fixture
async def daemon() -> Daemon:
    d = Daemon(Agent(Model.test(), "You watch deployments."), settings=settings())
    await d.start()
    yield d
    await d.stop()


async def test_queued_signal_runs_the_agent_and_is_recorded(daemon: Daemon) -> None:
    signal = RuntimeSignal.create("deploy 42 failed", source="ci", type="build", session_id="ops")
    await publish_signal(daemon.broker, signal)
    await drain(daemon)
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    [run] = snapshot.runs
    assert run.status == "completed"
    assert run.metadata["signals"] == [signal.id]
    assert "deploy 42 failed" in run.output
    assert await daemon.state.pending("ops") == []
    assert await daemon.state.in_flight("ops") == []
    [decision] = [decision_view(d) for d in await daemon.state.decisions("ops")]
    assert decision["action"] == "queue"


async def test_observed_signal_reaches_the_next_run(daemon: Daemon) -> None:
    seen: list[str] = []

    def model(request: ModelRequest) -> ModelResponse:
        seen.append(f"{request.instructions}\n{request.last_user_text()}")
        return ModelResponse(text="ok")

    daemon.agent.loop.provider = Model.function(model)
    low = RuntimeSignal.create("disk at 70%", urgency="low", session_id="ops")
    await publish_signal(daemon.broker, low)
    await drain(daemon)
    assert seen == []  # observing starts no run
    await publish_signal(daemon.broker, RuntimeSignal.create("status?", session_id="ops"))
    await drain(daemon)
    assert len(seen) == 1
    assert "Observed since your last run" in seen[0]
    assert "disk at 70%" in seen[0]
    assert "status?" in seen[0]


async def test_repeated_dedupe_key_is_processed_once(daemon: Daemon) -> None:
    for _ in range(3):
        await publish_signal(
            daemon.broker, RuntimeSignal.create("page", session_id="ops", dedupe_key="alert-1")
        )
    await drain(daemon)
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    assert len(snapshot.runs) == 1
    actions = [decision_view(d)["action"] for d in await daemon.state.decisions("ops")]
    assert actions.count("drop") == 2


async def test_poison_message_is_dead_lettered_and_consumer_keeps_going(daemon: Daemon) -> None:
    from loom.broker.base import Message
    from loom.wire import SIGNALS_EXCHANGE

    await daemon.broker.publish(SIGNALS_EXCHANGE, "x.y", Message(body=b"{not json"))
    await daemon.broker.publish(
        SIGNALS_EXCHANGE, "x.y", Message(body=json.dumps({"urgency": "panic"}).encode())
    )
    await publish_signal(daemon.broker, RuntimeSignal.create("good", session_id="ops"))
    await drain(daemon)
    letters = await daemon.broker.dead_letters()
    assert len(letters) == 2
    assert all(letter.reason.startswith("invalid signal") for letter in letters)
    assert "urgency" in letters[1].reason
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    assert [r.status for r in snapshot.runs] == ["completed"]


async def test_signals_arriving_while_busy_go_to_the_next_run_together(daemon: Daemon) -> None:
    gate = asyncio.Event()
    first_started = asyncio.Event()
    inputs: list[str] = []

    async def model(request: ModelRequest) -> ModelResponse:
        inputs.append(request.last_user_text())
        if len(inputs) == 1:
            first_started.set()
            await gate.wait()
        return ModelResponse(text="done")

    daemon.agent.loop.provider = Model.function(model)
    await publish_signal(daemon.broker, RuntimeSignal.create("first", session_id="ops"))
    await asyncio.wait_for(first_started.wait(), 5)
    for text in ("second", "third"):
        await publish_signal(daemon.broker, RuntimeSignal.create(text, session_id="ops"))
    await daemon.broker.join()  # type: ignore[attr-defined]
    gate.set()
    await drain(daemon)
    assert len(inputs) == 2
    assert "second" in inputs[1]
    assert "third" in inputs[1]


async def test_critical_signal_interrupts_the_running_run(daemon: Daemon) -> None:
    started = asyncio.Event()
    calls: list[str] = []

    async def model(request: ModelRequest) -> ModelResponse:
        calls.append(request.last_user_text())
        if len(calls) == 1:
            started.set()
            await asyncio.sleep(0.5)  # the interrupt lands meanwhile; it acts after this step
            return ModelResponse.of_tool_calls(ToolCallFactory.make())
        return ModelResponse(text="handled")

    daemon.agent.loop.provider = Model.function(model)
    await publish_signal(daemon.broker, RuntimeSignal.create("long job", session_id="ops"))
    await asyncio.wait_for(started.wait(), 5)
    await publish_signal(
        daemon.broker,
        RuntimeSignal.create("prod down", urgency="critical", session_id="ops"),
    )
    await drain(daemon)
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    statuses = [r.status for r in snapshot.runs]
    assert statuses == ["interrupted", "completed"]
    assert "prod down" in calls[-1]


class ToolCallFactory:
    @staticmethod
    def make():  # type: ignore[no-untyped-def]
        from loom import ToolCall

        return ToolCall("c1", "missing_tool", {})


async def test_signal_redelivered_after_a_crash_is_not_taken_for_a_duplicate(
    daemon: Daemon,
) -> None:
    signal = RuntimeSignal.create("page", session_id="ops", dedupe_key="alert-7")
    # A consumer claimed the key for this very signal, then died before acking it.
    assert await daemon.state.claim("signal:alert-7", signal.id, 60) is None
    await publish_signal(daemon.broker, signal)
    await drain(daemon)
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    assert [r.metadata["signals"] for r in snapshot.runs] == [[signal.id]]


async def test_duplicates_delivered_together_are_decided_once(daemon: Daemon) -> None:
    signals = [RuntimeSignal.create("page", session_id="ops", dedupe_key="k") for _ in range(5)]
    actions = await daemon.attention_consumer.decide_many(signals)
    assert actions.count("queue") == 1
    assert actions.count("drop") == 4


async def test_a_session_aware_policy_sees_busy_and_risks(daemon: Daemon) -> None:
    from loom.policies.attention import AttentionPolicy

    consumer = daemon.attention_consumer
    consumer.policy = AttentionPolicy.from_rules(
        {"busy": True, "action": "drop", "reason": "busy: not now"},
        {"has_risks": True, "action": "queue", "reason": "risky: look now"},
    )
    assert consumer.policy.reads_session
    low = [RuntimeSignal.create(f"n{i}", session_id="ops", urgency="low") for i in range(3)]
    assert await consumer.decide_many([low[0]]) == ["observe"]  # idle, no risks
    lease = await daemon.state.acquire_lease("ops", "someone-else", 30)
    assert lease is not None
    assert await consumer.decide_many([low[1]]) == ["drop"]
    await daemon.state.release_lease(lease)
    await daemon.state.set_risk("ops", "disk", "disk almost full")
    assert await consumer.decide_many([low[2]]) == ["queue"]
    reasons = [decision_view(d)["reason"] for d in await daemon.state.decisions("ops")]
    assert reasons == ["urgency low -> observe", "busy: not now", "risky: look now"]


async def test_a_session_blind_policy_reads_no_session_state(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = daemon.attention_consumer
    reads: list[list[str]] = []
    real = daemon.state.decision_contexts

    async def counting(session_ids):  # type: ignore[no-untyped-def]
        reads.append(list(session_ids))
        return await real(session_ids)

    monkeypatch.setattr(daemon.state, "decision_contexts", counting)
    signals = [RuntimeSignal.create("x", session_id=f"s{i}", urgency="low") for i in range(3)]
    assert not consumer.policy.reads_session  # the default urgency map
    assert await consumer.decide_many(signals) == ["observe"] * 3
    assert reads == []
    from loom.policies.attention import AttentionPolicy

    consumer.policy = AttentionPolicy.custom(lambda signal, view: "observe")
    await consumer.decide_many(signals)
    assert reads == [["s0", "s1", "s2"]]
