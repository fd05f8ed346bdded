"""Signals reaching an agent: attention decisions, adapters, hooks and validation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from loom import (
    Agent,
    AttentionPolicy,
    Model,
    ModelRequest,
    ModelResponse,
    RunStatus,
    RuntimeSignal,
    SignalAdapter,
    ToolCall,
    tool,
)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    def __call__(self, request: ModelRequest) -> str:
        self.requests.append(request)
        return "acknowledged"


def signal(summary: str, urgency: str = "normal", **fields: Any) -> RuntimeSignal:
    return RuntimeSignal.create(summary, source="monitor", type="alert", urgency=urgency, **fields)  # type: ignore[arg-type]


async def test_low_urgency_is_observed_and_shown_to_the_next_run() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))
    session = agent.session("ops")

    decision = await session.receive(signal("disk at 80%", "low"))

    assert decision.action == "observe"
    assert decision.run is None
    assert "low" in decision.reason
    assert [s.summary for s in session.pending_signals] == ["disk at 80%"]
    assert model.requests == []

    await session.run("status report please")

    first_user = model.requests[0].messages[0]
    assert first_user.role == "user"
    assert first_user.content == (
        "Signals observed since the last run:\n"
        "- [monitor/alert, urgency low] disk at 80%\n\n"
        "status report please"
    )
    assert len(session.pending_signals) == 0
    await session.run("again")
    assert "Signals observed" not in model.requests[1].messages[-1].content


async def test_normal_urgency_queues_a_run() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))
    incoming = signal("deploy 42 failed", "normal", payload={"service": "api"})

    decision = await agent.receive(incoming, session_id="ops")

    assert decision.action == "queue"
    assert decision.signal.session_id == "ops"
    assert decision.run is not None
    result = await decision.run
    assert result.status is RunStatus.COMPLETED
    assert result.session_id == "ops"
    assert result.metadata == {"signal": incoming.id}
    prompt = model.requests[0].last_user_text()
    assert prompt == incoming.describe()
    assert "deploy 42 failed" in prompt
    assert '"service": "api"' in prompt


async def test_signal_session_id_routes_the_signal() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))

    decision = await agent.receive(signal("hello", session_id="team-a"))

    assert decision.run is not None
    await decision.run
    assert model.requests[0].session_id == "team-a"
    assert agent.session("team-a").runs[0].status is RunStatus.COMPLETED


async def test_critical_signal_interrupts_the_running_run_then_runs() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @tool
    async def long_job() -> str:
        started.set()
        await release.wait()
        return "job finished"

    requests: list[ModelRequest] = []

    def model(request: ModelRequest) -> ModelResponse | str:
        requests.append(request)
        if request.last_user_text() == "routine work" and request.messages[-1].role == "user":
            return ModelResponse.of_tool_calls(ToolCall("j1", "long_job", {}))
        return f"handled: {request.last_user_text()}"

    agent = Agent(Model.function(model), tools=[long_job])
    session = agent.session("ops")
    routine = session.start("routine work")
    await asyncio.wait_for(started.wait(), 1)

    urgent = signal("database is down", "critical")
    decision = await session.receive(urgent)
    release.set()

    assert decision.action == "interrupt"
    assert decision.run is not None
    interrupted = await asyncio.wait_for(routine.wait(), 1)
    assert interrupted.status is RunStatus.INTERRUPTED
    assert interrupted.error == f"interrupted by signal {urgent.id}"
    handled = await asyncio.wait_for(decision.run.wait(), 1)
    assert handled.status is RunStatus.COMPLETED
    assert "database is down" in handled.output
    # the routine run made one model call only; the urgent run saw its transcript
    assert [r.run_id for r in requests].count(routine.id) == 1
    last = requests[-1].messages
    assert [m.role for m in last] == ["user", "assistant", "tool", "user"]
    assert last[2].content == "job finished"


async def test_critical_signal_on_idle_session_just_runs() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))

    decision = await agent.receive(signal("fire", "critical"), session_id="idle")

    assert decision.action == "interrupt"
    assert decision.run is not None
    assert (await decision.run).status is RunStatus.COMPLETED


async def test_expired_signal_is_dropped() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))
    session = agent.session("ops")
    stale = signal("old news", "critical", expires_at=datetime.now(UTC) - timedelta(seconds=1))

    decision = await session.receive(stale)

    assert decision.action == "drop"
    assert "expired" in decision.reason
    assert decision.run is None
    assert len(session.pending_signals) == 0
    assert not session.busy


async def test_duplicate_dedupe_key_is_dropped() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))
    session = agent.session("ops")

    first = await session.receive(signal("page", "normal", dedupe_key="evt-1"))
    second = await session.receive(signal("page again", "normal", dedupe_key="evt-1"))
    other = await session.receive(signal("other", "low", dedupe_key="evt-2"))

    assert first.action == "queue"
    assert second.action == "drop"
    assert "duplicate" in second.reason
    assert second.run is None
    assert other.action == "observe"
    assert first.run is not None
    await first.run
    assert len(model.requests) == 1


async def test_signal_adapter_maps_constants_and_callables() -> None:
    adapter = SignalAdapter(
        source="github",
        type=lambda event: f"pr.{event['action']}",
        urgency=lambda event: "low" if event["draft"] else "high",
        summary=lambda event: f"PR #{event['number']} {event['action']}",
        dedupe_key=lambda event: f"gh-{event['delivery']}",
    )
    event = {"action": "opened", "draft": False, "number": 7, "delivery": "abc"}

    adapted = adapter.adapt(event, session_id="repo")

    assert adapted.source == "github"
    assert adapted.type == "pr.opened"
    assert adapted.urgency == "high"
    assert adapted.summary == "PR #7 opened"
    assert adapted.dedupe_key == "gh-abc"
    assert adapted.session_id == "repo"
    assert adapted.payload == event

    fallback = SignalAdapter(source="chat").adapt({"text": "hello there"})
    assert fallback.summary == "hello there"
    assert fallback.urgency == "normal"
    assert fallback.session_id is None


async def test_receive_with_adapter_and_plain_dict() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))
    adapter = SignalAdapter(source="chat", urgency="low", summary=lambda e: e["msg"])

    adapted = await agent.receive({"msg": "fyi"}, adapter=adapter, session_id="room")
    plain = await agent.receive({"summary": "do it", "urgency": "normal", "session_id": "room"})

    assert adapted.action == "observe"
    assert adapted.signal.source == "chat"
    assert adapted.signal.session_id == "room"
    assert plain.action == "queue"
    assert plain.run is not None
    await plain.run
    content = model.requests[0].last_user_text()
    assert content.startswith(
        "Signals observed since the last run:\n- [chat/event, urgency low] fyi"
    )
    assert content.endswith("[custom/event, urgency normal] do it")


async def test_signal_hooks_fire() -> None:
    agent = Agent(Model.function(Recorder()))
    seen: list[tuple[str, dict[str, Any]]] = []
    agent.on("signal_received", lambda event_name, **p: seen.append((event_name, p)))
    agent.on("signal_decided", lambda event_name, **p: seen.append((event_name, p)))
    incoming = signal("note", "low")

    decision = await agent.receive(incoming, session_id="hooks")

    assert [name for name, _ in seen] == ["signal_received", "signal_decided"]
    received, decided = seen[0][1], seen[1][1]
    assert received["session_id"] == "hooks"
    assert received["signal"].id == incoming.id
    assert received["signal"].session_id == "hooks"
    assert decided["decision"] is decision
    assert decided["decision"].action == "observe"


async def test_custom_attention_policy() -> None:
    def decide(sig: RuntimeSignal, view: Any) -> tuple[str, str]:
        return ("drop", "muted source") if sig.source == "noisy" else ("observe", "keep")

    agent = Agent(Model.function(Recorder()), attention=AttentionPolicy.custom(decide))  # type: ignore[arg-type]

    muted = await agent.receive(RuntimeSignal(source="noisy", urgency="critical"), session_id="s")
    kept = await agent.receive(RuntimeSignal(source="calm", urgency="critical"), session_id="s")

    assert (muted.action, muted.reason) == ("drop", "muted source")
    assert (kept.action, kept.reason) == ("observe", "keep")
    with pytest.raises(ValueError, match="unknown action"):
        AttentionPolicy(by_urgency={"low": "explode"})  # type: ignore[dict-item]


async def test_receive_without_session_raises() -> None:
    agent = Agent(Model.function(Recorder()))

    with pytest.raises(ValueError, match="session"):
        await agent.receive(RuntimeSignal(summary="where do I go?"))
    with pytest.raises(ValueError, match="session"):
        await agent.receive({"summary": "nor I"})


# -- RuntimeSignal validation ----------------------------------------------------------------


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValidationError, match="observed_at"):
        RuntimeSignal(observed_at=datetime(2024, 1, 1, 12, 0))
    with pytest.raises(ValidationError, match="expires_at"):
        RuntimeSignal(expires_at=datetime(2024, 1, 1, 12, 0))


def test_aware_datetimes_are_normalised_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    sig = RuntimeSignal(observed_at=datetime(2024, 1, 1, 12, 0, tzinfo=plus_two))

    assert sig.observed_at == datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
    assert sig.observed_at.utcoffset() == timedelta(0)
    assert RuntimeSignal().observed_at.tzinfo is not None


def test_bad_urgency_is_rejected() -> None:
    with pytest.raises(ValidationError, match="urgency"):
        RuntimeSignal(urgency="urgent")  # type: ignore[arg-type]


def test_signal_is_frozen() -> None:
    sig = RuntimeSignal(summary="fixed")
    with pytest.raises(ValidationError):
        sig.summary = "changed"  # type: ignore[misc]
    assert sig.summary == "fixed"


def test_extra_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        RuntimeSignal.model_validate({"summary": "x", "surprise": True})


def test_bad_session_id_is_rejected() -> None:
    with pytest.raises(ValidationError, match="session_id"):
        RuntimeSignal(session_id="has spaces in it")


def test_signal_round_trips_through_json() -> None:
    sig = RuntimeSignal.create("cpu high", urgency="high", payload={"host": "a"}, dedupe_key="k")

    again = RuntimeSignal.model_validate_json(sig.model_dump_json())

    assert again == sig
    assert again.payload == {"host": "a", "content": "cpu high"}


def test_json_schema_has_the_fields() -> None:
    schema = RuntimeSignal.json_schema()

    assert {
        "id",
        "source",
        "type",
        "summary",
        "urgency",
        "payload",
        "session_id",
        "run_id",
        "dedupe_key",
        "reply_to",
        "observed_at",
        "expires_at",
    } <= set(schema["properties"])
    assert schema["properties"]["urgency"]["enum"] == ["low", "normal", "high", "critical"]
    assert schema["additionalProperties"] is False
