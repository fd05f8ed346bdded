"""Signals the worker fails on again and again go to the dead letters; the session goes on."""

from __future__ import annotations

from typing import Any

import pytest

from loom import Agent, Model, RuntimeSignal
from loom.daemon.app import Daemon
from loom.daemon.poison import PoisonGuard, failures_key
from loom.daemon.settings import Settings
from loom.state.base import StateUnavailable
from loom.wire import ATTENTION_QUEUE, publish_signal
from tests.polling import eventually

ATTEMPTS = 3


@pytest.fixture
async def daemon() -> Daemon:
    settings = Settings(
        broker_url="memory://",
        state_url="memory://",
        worker={"lease_ttl": 2.0, "sweep_interval": 0.02, "max_attempts": ATTEMPTS},
    )
    d = Daemon(Agent(Model.test(), "You watch deployments."), settings=settings)
    await d.start()
    yield d
    await d.stop()


async def runs_of(daemon: Daemon, session_id: str) -> list[Any]:
    snapshot = await daemon.state.sessions.load(session_id)
    return list(snapshot.runs) if snapshot is not None else []


async def test_a_history_that_cannot_load_gives_its_signals_up_then_they_replay(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = daemon.agent.session_store
    real_load = store.load_history
    attempts = 0

    async def broken(session_id: str) -> Any:
        nonlocal attempts
        if session_id == "ops":
            attempts += 1
            raise ValueError("corrupt history")
        return await real_load(session_id)

    monkeypatch.setattr(store, "load_history", broken)
    signal = RuntimeSignal.create("deploy 42 failed", session_id="ops", dedupe_key="d-42")
    await publish_signal(daemon.broker, signal)

    async def given_up() -> bool:
        return bool(await daemon.broker.dead_letters())

    await eventually(given_up, "the signal in the dead letters")
    [letter] = await daemon.broker.dead_letters()
    assert letter.origin_queue == ATTENTION_QUEUE
    assert f"failed {ATTEMPTS} times in a row" in letter.reason
    assert "corrupt history" in letter.reason
    assert RuntimeSignal.model_validate_json(letter.message.body) == signal
    assert attempts == ATTEMPTS
    assert await daemon.state.in_flight("ops") == []
    # Another session was never held up.
    await publish_signal(daemon.broker, RuntimeSignal.create("hello", session_id="other"))
    await eventually(lambda: _has_runs(daemon, "other"), "a run of the other session")

    # Fixed, and replayed: the same signal (its dedupe key held by itself) is handled.
    monkeypatch.setattr(store, "load_history", real_load)
    assert await daemon.broker.replay_dead_letters() == 1
    await eventually(lambda: _has_runs(daemon, "ops"), "the replayed signal's run")
    [run] = await runs_of(daemon, "ops")
    assert run.status == "completed"
    assert run.metadata["signals"] == [signal.id]
    assert await daemon.state.marker(failures_key("ops")) == "0"


async def _has_runs(daemon: Daemon, session_id: str) -> bool:
    return bool(await runs_of(daemon, session_id))


async def test_an_unreadable_pending_record_is_given_up_and_new_signals_run(
    daemon: Daemon,
) -> None:
    await daemon.state.add_pending("ops", "{not a pending signal")
    await daemon.state.mark_ready("ops")

    async def given_up() -> bool:
        return bool(await daemon.broker.dead_letters())

    await eventually(given_up, "the record in the dead letters")
    [letter] = await daemon.broker.dead_letters()
    assert letter.message.body == b"{not a pending signal"
    await publish_signal(daemon.broker, RuntimeSignal.create("status?", session_id="ops"))
    await eventually(lambda: _has_runs(daemon, "ops"), "a run of the session")
    assert [r.status for r in await runs_of(daemon, "ops")] == ["completed"]


async def test_outages_are_not_counted_and_a_success_starts_again_from_zero(
    daemon: Daemon,
) -> None:
    guard = PoisonGuard(daemon.broker, daemon.state, max_attempts=2)
    lease = await daemon.state.acquire_lease("quiet", "test-worker", 30)
    assert lease is not None
    assert not await guard.failed(lease, StateUnavailable("redis is away"))
    assert await daemon.state.marker(failures_key("quiet")) is None
    assert not await guard.failed(lease, ValueError("boom"))
    assert await daemon.state.marker(failures_key("quiet")) == "1"
    await guard.recovered("quiet")
    assert not await guard.failed(lease, ValueError("boom"))  # one again, not two
    assert await guard.failed(lease, ValueError("boom"))
    assert await daemon.broker.dead_letters() == []  # nothing was in flight
    with pytest.raises(ValueError, match="at least 1"):
        PoisonGuard(daemon.broker, daemon.state, max_attempts=0)
