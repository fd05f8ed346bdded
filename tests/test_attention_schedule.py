"""Scheduling in the attention policy (issue 19): debounce with a maximum wait, a minimum
interval between runs, folding by group key, critical signals bypassing all, and rules
refused at start with the name of what is wrong."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from loom import Agent, Model, ModelResponse, RuntimeSignal
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.policies.attention import AttentionPolicy, AttentionRule
from loom.providers.base import ModelRequest
from loom.signals import Urgency
from loom.wire import publish_signal
from tests.polling import eventually
from tests.test_daemon_memory import drain, settings


@pytest.fixture
async def daemon() -> Daemon:
    d = Daemon(Agent(Model.test(), "You watch chat."), settings=settings())
    await d.start()
    yield d
    await d.stop()


def line(text: str, *, urgency: Urgency = "normal", **payload: object) -> RuntimeSignal:
    return RuntimeSignal.create(
        text, source="slack", type="message", urgency=urgency, session_id="ops", payload=payload
    )


def recorder(daemon: Daemon) -> list[str]:
    inputs: list[str] = []

    def model(request: ModelRequest) -> ModelResponse:
        inputs.append(request.last_user_text())
        return ModelResponse(text="ok")

    daemon.agent.loop.provider = Model.function(model)
    return inputs


async def test_a_burst_waits_for_quiet_and_becomes_one_run(daemon: Daemon) -> None:
    daemon.attention_consumer.policy = AttentionPolicy(schedule={"debounce": 0.3, "max_wait": 3})
    inputs = recorder(daemon)
    for n in range(4):
        await publish_signal(daemon.broker, line(f"line {n}"))
    await drain(daemon)
    assert inputs == []  # put off: quiet time first
    assert await daemon.state.scheduled("ops")
    await eventually(lambda: _done(inputs, 1), "the debounced run")
    await drain(daemon)
    assert len(inputs) == 1
    assert all(f"line {n}" in inputs[0] for n in range(4))


async def test_a_critical_signal_bypasses_the_debounce(daemon: Daemon) -> None:
    daemon.attention_consumer.policy = AttentionPolicy(schedule={"debounce": 30})
    inputs = recorder(daemon)
    await publish_signal(daemon.broker, line("chatter"))
    await publish_signal(daemon.broker, line("prod down", urgency="critical"))
    await drain(daemon)
    assert len(inputs) == 1  # at once, with the put-off chatter folded in
    assert "chatter" in inputs[0]
    assert "prod down" in inputs[0]
    assert not await daemon.state.scheduled("ops")


async def test_a_minimum_interval_puts_the_next_run_off(daemon: Daemon) -> None:
    daemon.attention_consumer.policy = AttentionPolicy(schedule={"min_interval": 30})
    inputs = recorder(daemon)
    await publish_signal(daemon.broker, line("first"))
    await drain(daemon)
    await publish_signal(daemon.broker, line("second"))
    await drain(daemon)
    assert len(inputs) == 1  # the second waits for the interval to pass
    assert await daemon.state.scheduled("ops")


async def test_a_signal_of_a_group_being_handled_is_folded_into_that_run(daemon: Daemon) -> None:
    daemon.attention_consumer.policy = AttentionPolicy.from_rules(
        {"source": "slack", "action": "queue", "group": ["thread"]}
    )
    gate, started = asyncio.Event(), asyncio.Event()
    inputs: list[str] = []

    async def model(request: ModelRequest) -> ModelResponse:
        inputs.append(f"{request.instructions}\n{request.last_user_text()}")
        started.set()
        await gate.wait()
        return ModelResponse(text="ok")

    daemon.agent.loop.provider = Model.function(model)
    await publish_signal(daemon.broker, line("question", thread="t1"))
    await asyncio.wait_for(started.wait(), 5)
    await publish_signal(daemon.broker, line("more detail", thread="t1"))
    await daemon.broker.join()  # type: ignore[attr-defined]
    gate.set()
    await drain(daemon)
    assert len(inputs) == 1  # the same thread: no run of its own
    decisions = await daemon.state.decisions("ops")
    assert "folded into the run for group 'slack|t1'" in decisions[-1]
    await publish_signal(daemon.broker, line("other thread", thread="t2"))
    await drain(daemon)
    assert len(inputs) == 2
    assert "more detail" in inputs[1]  # the folded line reaches the next run's working state


def test_a_rule_with_a_negative_delay_or_an_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="debounce"):
        AttentionRule(action="queue", debounce=-1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="debounse"):
        AttentionRule(action="queue", debounse=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="min_interval"):
        Settings(attention_schedule={"min_interval": -5})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_wait"):
        Settings(attention_rules=[{"action": "queue", "max_wait": -1}])  # type: ignore[list-item]


async def _done(inputs: list[str], count: int) -> bool:
    return len(inputs) >= count
