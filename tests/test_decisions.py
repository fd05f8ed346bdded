"""One decision step: a session in one process and the daemon's attention role decide the
same signals alike, and announce them with one ``signal_decided`` payload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loom import Agent, Model, RuntimeSignal
from loom.broker.memory import MemoryBroker
from loom.core.attention import Action, SessionView
from loom.daemon.attention import AttentionConsumer
from loom.policies import AttentionPolicy
from loom.runtime.decisions import SignalDecision
from loom.state.memory_state import MemoryState
from loom.wire import TOPOLOGY


def test_an_action_knows_what_it_does() -> None:
    assert [a for a in Action if a.keeps_signal] == [Action.OBSERVE, Action.QUEUE, Action.INTERRUPT]
    assert [a for a in Action if a.wakes_a_worker] == [
        Action.QUEUE,
        Action.INTERRUPT,
        Action.RESUME,
    ]
    assert [a for a in Action if a.interrupts] == [Action.INTERRUPT]
    assert [a for a in Action if a.resumes] == [Action.RESUME]
    with pytest.raises(ValueError, match="never shown"):
        _ = Action.RESUME.prompt_section
    assert Action.QUEUE.prompt_section == Action.INTERRUPT.prompt_section == "Signals to handle"
    assert Action.OBSERVE.prompt_section.startswith("Observed since your last run")
    with pytest.raises(ValueError, match="never shown"):
        _ = Action.DROP.prompt_section
    assert Action.parse("queue") is Action.QUEUE
    assert Action.QUEUE == "queue"  # records and payloads carry the value
    with pytest.raises(ValueError, match=r"unknown action 'defer'; actions are observe, queue"):
        Action.parse("defer")


PAST = datetime.now(UTC) - timedelta(seconds=1)


def signals(session_id: str) -> list[RuntimeSignal]:
    return [
        RuntimeSignal.create("fyi", urgency="low", session_id=session_id),
        RuntimeSignal.create("deploy", urgency="normal", session_id=session_id, dedupe_key="d1"),
        RuntimeSignal.create("again", urgency="normal", session_id=session_id, dedupe_key="d1"),
        RuntimeSignal.create("stale", urgency="high", session_id=session_id, expires_at=PAST),
        RuntimeSignal.create("page", urgency="critical", session_id=session_id),
    ]


def recorder(agent: Agent) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    for name in ("signal_received", "signal_decided"):
        agent.on(name, lambda event_name, **payload: seen.append((event_name, payload)))
    return seen


def summary(decisions: list[SignalDecision]) -> list[tuple[Action, str, bool]]:
    return [(d.action, d.reason, d.duplicate) for d in decisions]


async def test_a_session_and_the_attention_role_decide_alike() -> None:
    in_process = Agent(Model.test())
    kernel_hooks = recorder(in_process)
    kernel = [await in_process.receive(s) for s in signals("ops")]
    for decision in kernel:
        if decision.run is not None:
            await decision.run.wait()

    daemon_agent = Agent(Model.test())
    daemon_hooks = recorder(daemon_agent)
    broker, state = MemoryBroker(topology=TOPOLOGY), MemoryState()
    await broker.start()
    consumer = AttentionConsumer(broker, state, daemon_agent.attention, hooks=daemon_agent.hooks)
    actions = await consumer.decide_many(signals("ops"))
    daemon = [payload["decision"] for name, payload in daemon_hooks if name == "signal_decided"]

    expected = [
        (Action.OBSERVE, "urgency low -> observe", False),
        (Action.QUEUE, "urgency normal -> queue", False),
        (Action.DROP, "duplicate dedupe_key 'd1'", True),
        (Action.DROP, f"expired at {PAST}", False),
        (Action.INTERRUPT, "urgency critical -> interrupt", False),
    ]
    assert summary(kernel) == summary(daemon) == expected
    assert actions == [action for action, _, _ in expected]
    # One payload in both places: every signal received, every one decided.
    for seen in (kernel_hooks, daemon_hooks):
        assert [name for name, _ in seen].count("signal_received") == 5
        decided = [payload for name, payload in seen if name == "signal_decided"]
        assert [sorted(payload) for payload in decided] == 5 * [
            ["decision", "session_id", "signal"]
        ]
        assert all(p["decision"].signal is p["signal"] for p in decided)
    # In one process a woken session runs now; in the daemon a worker is told to run it.
    assert [d.run is not None for d in kernel] == [False, True, False, False, True]
    assert all(d.run is None for d in daemon)
    assert await state.ready_sessions() == ["ops"]
    pending = await state.pending("ops")
    assert len(pending) == 3  # observe, queue, interrupt: what a run will see


def test_the_old_import_paths_still_work() -> None:
    """The vocabulary moved to loom.core and loom.wire; the paths users imported remain."""
    from loom.core import hooks, messages, session_store
    from loom.daemon.signals_io import PendingSignal, publish_signal
    from loom.policies import SessionView as PolicySessionView
    from loom.policies.attention import ACTIONS
    from loom.policies.attention import Action as PolicyAction
    from loom.policies.attention import SignalDecision as Old
    from loom.runtime.hooks import HookManager
    from loom.runtime.messages import Message, ToolCall, Usage
    from loom.state.sessions import RunRecord, SessionStore
    from loom.wire import encoding

    assert (Message, ToolCall, Usage) == (messages.Message, messages.ToolCall, messages.Usage)
    assert HookManager is hooks.HookManager
    assert (RunRecord, SessionStore) == (session_store.RunRecord, session_store.SessionStore)
    assert (PendingSignal, publish_signal) == (encoding.PendingSignal, encoding.publish_signal)
    assert PolicyAction is Action
    assert tuple(Action) == ACTIONS
    assert Old is SignalDecision
    assert PolicySessionView is SessionView


async def test_a_session_decides_on_what_it_receives_as_its_own() -> None:
    """A signal naming another session, handed to this one, is decided on this session's
    view, kept here, and announced under this session's id."""
    seen: list[str] = []

    def decide(signal: RuntimeSignal, view: SessionView) -> tuple[str, str]:
        return "observe", f"{view.session_id} pending={view.pending_signals}"

    agent = Agent(Model.test(), attention=AttentionPolicy.custom(decide))
    agent.on("signal_decided", lambda event_name, **p: seen.append(p["session_id"]))
    ops = agent.session("ops")
    first = await ops.receive(RuntimeSignal(summary="one", session_id="other"))
    second = await ops.receive({"summary": "two", "session_id": "other"})

    assert [first.reason, second.reason] == ["ops pending=0", "ops pending=1"]
    assert [first.signal.session_id, second.signal.session_id] == ["ops", "ops"]
    assert seen == ["ops", "ops"]
    assert [s.summary for s in ops.pending_signals] == ["one", "two"]


async def test_no_rule_can_drop_a_decision_on_an_approval() -> None:
    def drop_everything(signal: RuntimeSignal, view: SessionView) -> tuple[str, str]:
        return "drop", "muted"

    policy = AttentionPolicy.custom(drop_everything)
    approval = RuntimeSignal.create(
        "approved",
        type="approval",
        session_id="ops",
        payload={"approval_id": "apr_1", "decision": "approve"},
    )
    broker, state = MemoryBroker(topology=TOPOLOGY), MemoryState()
    await broker.start()
    consumer = AttentionConsumer(broker, state, policy, hooks=Agent(Model.test()).hooks)

    actions = await consumer.decide_many([approval, RuntimeSignal.create("x", session_id="ops")])

    assert actions == [Action.RESUME, Action.DROP]
    assert await state.ready_sessions() == ["ops"]  # a worker looks at the suspended run
    assert await state.pending("ops") == []  # the decision is in the state, not a task
