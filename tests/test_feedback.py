"""Feedback: run outcomes and tool failures from the hooks, explicit feedback over HTTP and
Slack thumbs, quality verdicts; kept in the state, counted, handed to subscribers, read by
``loom feedback``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from loom import Agent, Model, ModelResponse, RuntimeSignal, ToolCall, tool
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.policies import ExplicitFeedback, FeedbackEvent, FeedbackPolicy
from loom.providers.base import ModelRequest
from loom.wire import publish_signal
from tests.services import delete_redis_keys, require_redis
from tests.test_daemon_memory import drain
from tests.test_metrics import delta, scrape

TOKEN = "feedback-token"


@tool
def lookup(service: str) -> str:
    """Fail for unknown services."""
    raise LookupError(f"no service {service!r}")


def script(request: ModelRequest) -> ModelResponse:
    if request.iteration == 1:
        return ModelResponse.of_tool_calls(ToolCall("c1", "lookup", {"service": "db"}))
    return ModelResponse(text="db is unknown")


def make_daemon(feedback: FeedbackPolicy | None = None, **settings: Any) -> Daemon:
    return Daemon(
        Agent(Model.function(script), tools=[lookup]),
        settings=Settings(api_token=TOKEN, worker={"sweep_interval": 0.05}, **settings),
        feedback=feedback,
    )


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    d = make_daemon()
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://loom", headers=headers
    ) as http:
        yield http


async def run_once(daemon: Daemon, session_id: str = "ops") -> str:
    await publish_signal(daemon.broker, RuntimeSignal.create("is db up?", session_id=session_id))
    await drain(daemon)
    snapshot = await daemon.state.sessions.load(session_id)
    assert snapshot is not None
    return snapshot.runs[-1].run_id


async def test_runs_and_tool_failures_become_events_metrics_and_callbacks(
    daemon: Daemon,
) -> None:
    seen: list[FeedbackEvent] = []
    awaited: list[str] = []

    async def later(event: FeedbackEvent) -> None:
        awaited.append(event.kind)

    daemon.feedback.subscribe(seen.append)
    daemon.feedback.subscribe(later)
    before = await scrape(daemon)
    run_id = await run_once(daemon)
    after = await scrape(daemon)

    failure, outcome = await daemon.feedback.read("ops")
    assert (failure.kind, failure.value, failure.score) == ("tool_failure", "lookup", -1.0)
    assert failure.run_id == run_id
    assert "no service 'db'" in failure.comment
    assert failure.data == {"tool_call_id": "c1"}
    assert (outcome.kind, outcome.value, outcome.score) == ("run_outcome", "completed", 1.0)
    assert outcome.run_id == run_id
    assert outcome.source == "runtime"
    assert [e.id for e in seen] == [failure.id, outcome.id]
    assert awaited == ["tool_failure", "run_outcome"]
    assert delta(before, after, "loom_feedback_events_total", kind="run_outcome") == 1
    assert delta(before, after, "loom_feedback_events_total", kind="tool_failure") == 1
    assert [e.id for e in await daemon.feedback.read()] == [failure.id, outcome.id]


async def test_a_failing_subscriber_does_not_lose_the_event(daemon: Daemon) -> None:
    def broken(event: FeedbackEvent) -> None:
        raise RuntimeError("subscriber bug")

    daemon.feedback.subscribe(broken)
    await run_once(daemon)
    assert [e.kind for e in await daemon.feedback.read("ops")] == ["tool_failure", "run_outcome"]


async def test_explicit_feedback_over_http(daemon: Daemon, client: httpx.AsyncClient) -> None:
    run_id = await run_once(daemon)
    before = await scrape(daemon)
    thumbs = await client.post(
        "/sessions/ops/feedback", json={"value": "down", "comment": "wrong db", "run_id": run_id}
    )
    scored = await client.post("/sessions/ops/feedback", json={"score": 0.5})
    after = await scrape(daemon)

    assert thumbs.status_code == 202
    assert thumbs.json()["status"] == "accepted"
    assert scored.status_code == 202
    *_, down, half = await daemon.feedback.read("ops")
    assert down.id == thumbs.json()["id"]
    assert (down.kind, down.value, down.score, down.source) == ("explicit", "down", -1.0, "http")
    assert (down.run_id, down.comment) == (run_id, "wrong db")
    assert (half.value, half.score, half.run_id) == ("up", 0.5, None)
    assert delta(before, after, "loom_feedback_events_total", kind="explicit") == 2
    assert (
        delta(
            before,
            after,
            "loom_http_requests_total",
            route="/sessions/{session_id:path}/feedback",
            status="202",
        )
        == 2
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"score": 2}, 422, "score: Input should be less than or equal to 1"),
        ({}, 422, 'give "score" (-1 to 1) or "value"'),
        ({"value": "meh"}, 422, "value: Input should be 'up' or 'down'"),
        ({"value": "up", "score": -0.5}, 422, "contradicts"),
        ({"score": 1, "rating": 5}, 422, "rating: Extra inputs are not permitted"),
        ({"score": 1, "run_id": "run_nope"}, 404, "has no run 'run_nope'"),
    ],
)
async def test_bad_feedback_says_what_is_wrong(
    daemon: Daemon, client: httpx.AsyncClient, body: dict[str, Any], status: int, message: str
) -> None:
    await run_once(daemon)
    response = await client.post("/sessions/ops/feedback", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert [e.kind for e in await daemon.feedback.read("ops")] == ["tool_failure", "run_outcome"]


async def test_feedback_needs_the_token_a_session_and_a_small_body(
    daemon: Daemon, client: httpx.AsyncClient
) -> None:
    await run_once(daemon)
    anonymous = await client.post(
        "/sessions/ops/feedback", json={"score": 1}, headers={"authorization": ""}
    )
    assert anonymous.status_code == 401
    unknown = await client.post("/sessions/nobody/feedback", json={"score": 1})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "no session 'nobody'"
    invalid = await client.post("/sessions/bad%20id/feedback", json={"score": 1})
    assert invalid.status_code == 400
    huge = await client.post("/sessions/ops/feedback", json={"score": 1, "comment": "x" * 20_000})
    assert huge.status_code == 413
    not_json = await client.post("/sessions/ops/feedback", content=b"thumbs up")
    assert not_json.status_code == 422
    assert not_json.json()["error"].startswith("invalid feedback: body: Invalid JSON")
    assert len(await daemon.feedback.read("ops")) == 2


async def test_feedback_turned_off_records_nothing_and_refuses_explicit_feedback() -> None:
    daemon = make_daemon(feedback=FeedbackPolicy.none())
    await daemon.start()
    try:
        await run_once(daemon)
        transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as http:
            refused = await http.post(
                "/sessions/ops/feedback",
                json={"score": 1},
                headers={"authorization": f"Bearer {TOKEN}"},
            )
        assert refused.status_code == 409
        assert "feedback is turned off" in refused.json()["error"]
        assert await daemon.state.read_feedback() == []
    finally:
        await daemon.stop()


async def test_settings_turn_the_default_collector_off_and_bound_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOOM_FEEDBACK__ENABLED", "false")
    off = make_daemon()
    assert off.feedback.enabled is False
    monkeypatch.delenv("LOOM_FEEDBACK__ENABLED")
    monkeypatch.setenv("LOOM_FEEDBACK__MAX_EVENTS", "7")
    bounded = make_daemon()
    assert bounded.feedback.enabled is True
    assert bounded.state.max_feedback == 7
    assert bounded.state.max_session_feedback == 100  # per session: its own, small bound
    monkeypatch.setenv("LOOM_FEEDBACK__MAX_SESSION_EVENTS", "3")
    per_session = make_daemon()
    assert (per_session.state.max_feedback, per_session.state.max_session_feedback) == (7, 3)
    for i in range(5):
        await per_session.feedback.explicit("ops", ExplicitFeedback(score=i / 10))
    assert [e.score for e in await per_session.feedback.read("ops")] == [0.2, 0.3, 0.4]
    assert len(await per_session.feedback.read(limit=100)) == 5


async def test_slack_thumbs_become_explicit_feedback(daemon: Daemon) -> None:
    def reaction(name: str) -> RuntimeSignal:
        return RuntimeSignal.create(
            f"U1 reacted :{name}: to message 1.2 in C1",
            source="slack",
            type="reaction_added",
            urgency="low",
            session_id="slack:T1:C1:1.2",
            payload={"reaction": name, "user": "U1", "channel": "C1", "ts": "1.2"},
        )

    up, down, party = reaction("+1::skin-tone-3"), reaction("thumbsdown"), reaction("tada")
    before = await scrape(daemon)
    for signal in (up, down, party):
        await publish_signal(daemon.broker, signal)
    await drain(daemon)
    after = await scrape(daemon)

    events = await daemon.feedback.read("slack:T1:C1:1.2")
    assert [(e.kind, e.value, e.score, e.source) for e in events] == [
        ("explicit", "up", 1.0, "slack"),
        ("explicit", "down", -1.0, "slack"),
    ]
    assert [e.id for e in events] == [f"fb_{up.id}", f"fb_{down.id}"]
    assert events[0].comment == ":+1::skin-tone-3: from U1"
    assert delta(before, after, "loom_feedback_events_total", kind="explicit") == 2
    # The reactions are signals too: observed, like any low-urgency signal.
    assert delta(before, after, "loom_attention_decisions_total", decision="observe") == 3


async def test_quality_verdicts_are_counted_by_verdict(daemon: Daemon) -> None:
    before = await scrape(daemon)
    passed = await daemon.feedback.quality_verdict("ops", "run_1", "pass", comment="tests green")
    await daemon.feedback.quality_verdict("ops", "run_2", "fail")
    after = await scrape(daemon)
    assert passed is not None
    assert (passed.kind, passed.score, passed.comment) == ("quality_verdict", 1.0, "tests green")
    assert delta(before, after, "loom_quality_verdicts_total", verdict="pass") == 1
    assert delta(before, after, "loom_quality_verdicts_total", verdict="fail") == 1
    assert delta(before, after, "loom_feedback_events_total", kind="quality_verdict") == 2
    with pytest.raises(ValueError, match="'pass' or 'fail'"):
        await daemon.feedback.quality_verdict("ops", None, "maybe")  # type: ignore[arg-type]


async def test_a_standalone_collector_keeps_a_bounded_stream_of_its_own() -> None:
    policy = FeedbackPolicy.collector(max_events=3)
    assert (policy.state.max_feedback, policy.state.max_session_feedback) == (3, 200)
    assert FeedbackPolicy.collector(max_session_events=9).state.max_session_feedback == 9
    with pytest.raises(ValueError, match="at least 1"):
        FeedbackPolicy.collector(max_session_events=0)
    agent = Agent(Model.function(script), tools=[lookup])
    policy.attach(agent)
    policy.attach(agent)  # idempotent: each event once
    for _ in range(2):
        await agent.run("is db up?")
    await policy.explicit("anywhere", ExplicitFeedback(value="up"), source="cli")
    events = await policy.read(limit=10)
    assert [e.kind for e in events] == ["tool_failure", "run_outcome", "explicit"]
    await agent.aclose()


def test_events_round_trip_through_json() -> None:
    event = FeedbackEvent("explicit", "ops", run_id="r", value="up", score=1.0, comment="ok")
    assert FeedbackEvent.from_json(event.to_json()) == event
    with pytest.raises(ValueError, match="unknown feedback kind"):
        FeedbackEvent.from_json(json.dumps({**event.to_dict(), "kind": "vibes"}))


async def test_loom_feedback_reads_the_stream_from_redis() -> None:
    url = require_redis()
    namespace = f"loomtest-{uuid.uuid4().hex[:10]}"
    from loom.state.redis_state import RedisState

    state = RedisState(url, prefix=f"{namespace}:loom")
    policy = FeedbackPolicy.collector(state=state)
    first = await policy.explicit("ops", ExplicitFeedback(value="up", comment="nice"))
    await policy.quality_verdict("other", "run_9", "fail")
    await state.close()
    env = {**os.environ, "LOOM_STATE_URL": url, "LOOM_NAMESPACE": namespace}

    async def loom(*args: str, **changes: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "loom", "feedback", *args],
            env={**env, **changes},
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        lines = (await loom("--session", "ops", "--json")).stdout.splitlines()
        assert first is not None
        assert [json.loads(line)["id"] for line in lines] == [first.id]
        table = (await loom("--limit", "5")).stdout.splitlines()
        assert len(table) == 2
        assert "ops  -  explicit  up  +1  api  nice" in table[0]
        assert "other  run_9  quality_verdict  fail  -1  quality" in table[1]
        memory = await loom(LOOM_STATE_URL="memory://")
        assert memory.returncode == 2
        assert "set LOOM_STATE_URL to Redis" in memory.stderr
    finally:
        await delete_redis_keys(url, namespace)
