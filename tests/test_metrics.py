"""Metrics: drive a scripted flow in process, scrape /metrics, check exact deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loom import Agent, Model, ModelResponse, RuntimeSignal, ToolCall, tool
from loom.core.messages import Usage
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.providers.base import ModelRequest
from loom.wire import publish_signal
from tests.test_daemon_memory import drain

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@tool
def flaky(n: int) -> str:
    """Fail on odd numbers."""
    if n % 2:
        raise RuntimeError("odd")
    return "even"


def script(request: ModelRequest) -> ModelResponse:
    if request.iteration == 1:
        return ModelResponse.of_tool_calls(
            ToolCall("a", "flaky", {"n": 2}),
            ToolCall("b", "flaky", {"n": 3}),
            usage=Usage(input_tokens=100, output_tokens=10),
            model="gpt-5.1",
        )
    return ModelResponse(
        text="done", usage=Usage(input_tokens=120, output_tokens=5), model="gpt-5.1"
    )


@pytest.fixture
async def daemon(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    from loom import metrics

    # The label bounds are per process: earlier tests (fuzzing among them) must not have
    # used them up, or these tests' sources and types would be counted as "other".
    monkeypatch.setattr(metrics, "_SOURCES", metrics.BoundedLabel())
    monkeypatch.setattr(metrics, "_TYPES", metrics.BoundedLabel())
    settings = Settings(worker={"sweep_interval": 0.05})  # type: ignore[arg-type]
    d = Daemon(Agent(Model.function(script), tools=[flaky]), settings=settings)
    await d.start()
    yield d
    await d.stop()


async def scrape(daemon: Daemon) -> Samples:
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
        text = (await client.get("/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_a_flow_moves_the_counters_by_exactly_what_happened(daemon: Daemon) -> None:
    before = await scrape(daemon)
    for text, urgency, key in (
        ("deploy failed", "normal", "d-1"),
        ("deploy failed", "normal", "d-1"),
        ("disk at 70%", "low", None),
    ):
        signal = RuntimeSignal.create(
            text, source="ci", type="deploy", urgency=urgency, session_id="ops", dedupe_key=key
        )
        await publish_signal(daemon.broker, signal)
    await drain(daemon)
    after = await scrape(daemon)

    assert delta(before, after, "loom_signals_received_total", source="ci", type="deploy") == 3
    assert delta(before, after, "loom_attention_decisions_total", decision="queue") == 1
    assert delta(before, after, "loom_attention_decisions_total", decision="drop") == 1
    assert delta(before, after, "loom_attention_decisions_total", decision="observe") == 1
    assert delta(before, after, "loom_dedupe_hits_total") == 1
    assert delta(before, after, "loom_runs_total", status="completed") == 1
    assert delta(before, after, "loom_run_duration_seconds_count") == 1
    # The queued signal's wait; the observed one waits for no run by design.
    assert delta(before, after, "loom_signal_wait_seconds_count") == 1
    assert delta(before, after, "loom_model_calls_total", model="gpt-5.1") == 2
    assert delta(before, after, "loom_tokens_total", model="gpt-5.1", direction="input") == 220
    assert delta(before, after, "loom_tokens_total", model="gpt-5.1", direction="output") == 15
    expected_cost = (220 * 1.25 + 15 * 10.0) / 1_000_000
    assert delta(before, after, "loom_cost_usd_total", model="gpt-5.1") == pytest.approx(
        expected_cost
    )
    assert delta(before, after, "loom_tool_calls_total", tool="flaky", outcome="ok") == 1
    assert delta(before, after, "loom_tool_calls_total", tool="flaky", outcome="error") == 1
    assert delta(before, after, "loom_active_runs") == 0


async def test_poison_messages_count_as_dead_letters(daemon: Daemon) -> None:
    from loom.broker.base import Message
    from loom.wire import SIGNALS_EXCHANGE

    before = await scrape(daemon)
    await daemon.broker.publish(SIGNALS_EXCHANGE, "x.y", Message(body=b"{oops"))
    await drain(daemon)
    after = await scrape(daemon)
    assert delta(before, after, "loom_dead_letters_total", queue="loom.attention") == 1


async def test_http_requests_are_counted_by_route_template_never_the_path(daemon: Daemon) -> None:
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    before = await scrape(daemon)
    async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/sessions/alice")).status_code == 404
        assert (await client.get("/sessions/bob/x")).status_code == 404
        assert (await client.get("/no/such/page")).status_code == 404
        assert (await client.delete("/signals")).status_code == 405
        accepted = await client.post("/signals", json={"summary": "x", "session_id": "ops"})
        assert accepted.status_code == 202
    after = await scrape(daemon)

    def requests(route: str, status: str) -> float:
        return delta(before, after, "loom_http_requests_total", route=route, status=status)

    assert requests("/healthz", "200") == 1
    assert requests("/sessions/{session_id:path}", "404") == 2
    assert requests("unmatched", "404") == 1
    assert requests("/signals", "405") == 1
    assert requests("/signals", "202") == 1
    assert delta(before, after, "loom_http_request_duration_seconds_count", route="/healthz") == 1
    assert not [key for key in after if "alice" in str(key) or "bob" in str(key)]


async def test_consumers_and_active_sessions_are_this_process_figures() -> None:
    import asyncio

    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(request: ModelRequest) -> ModelResponse:
        started.set()
        await release.wait()
        return ModelResponse(text="done")

    settings = Settings(worker={"sweep_interval": 0.05})  # type: ignore[arg-type]
    other = Daemon(Agent(Model.function(slow)), settings=settings)
    before = await scrape(other)
    await other.start()
    running = await scrape(other)
    assert delta(before, running, "loom_consumers", queue="loom.attention") == 1
    assert delta(before, running, "loom_consumers", queue="loom.work") == 1
    await publish_signal(other.broker, RuntimeSignal.create("go", session_id="busy"))
    await asyncio.wait_for(started.wait(), 5)
    during = await scrape(other)
    assert delta(before, during, "loom_active_sessions") == 1
    assert delta(before, during, "loom_active_runs") == 1
    release.set()
    await drain(other)
    await other.stop()
    after = await scrape(other)
    assert delta(before, after, "loom_active_sessions") == 0
    assert delta(before, after, "loom_active_runs") == 0
    assert delta(before, after, "loom_consumers", queue="loom.attention") == 0
    assert delta(before, after, "loom_consumers", queue="loom.work") == 0


async def test_tool_label_is_a_tool_of_the_agent_or_unknown(daemon: Daemon) -> None:
    """The model names the tool: one it made up must not become a label value."""
    calls = iter(
        [
            ModelResponse.of_tool_calls(
                ToolCall("a", "flaky", {"n": 2}), ToolCall("b", "drop_all_tables_1f9c", {})
            ),
            ModelResponse(text="done"),
        ]
    )
    daemon.agent.loop.provider = Model.function(lambda request: next(calls))
    before = await scrape(daemon)
    await publish_signal(daemon.broker, RuntimeSignal.create("go", session_id="ops"))
    await drain(daemon)
    after = await scrape(daemon)
    assert delta(before, after, "loom_tool_calls_total", tool="flaky", outcome="ok") == 1
    assert delta(before, after, "loom_tool_calls_total", tool="unknown", outcome="error") == 1
    assert not [key for key in after if "drop_all_tables" in str(key)]


async def test_signal_source_and_type_labels_are_bounded(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loom import metrics

    monkeypatch.setattr(metrics, "_SOURCES", metrics.BoundedLabel(limit=2))
    monkeypatch.setattr(metrics, "_TYPES", metrics.BoundedLabel(limit=2))
    before = await scrape(daemon)
    for source, type_ in (("ci", "a"), ("cd", "b"), ("urn:x:1", "c"), ("ci", "d"), ("cd", "a")):
        signal = RuntimeSignal.create("x", source=source, type=type_, urgency="low")
        await publish_signal(daemon.broker, signal)
    await drain(daemon)
    after = await scrape(daemon)

    def received(source: str, type_: str) -> float:
        return delta(before, after, "loom_signals_received_total", source=source, type=type_)

    assert received("ci", "a") == 1
    assert received("cd", "b") == 1
    assert received("other", "other") == 1  # a third source, a third type
    assert received("ci", "other") == 1
    assert received("cd", "a") == 1
    assert not [key for key in after if "urn:x:1" in str(key)]
    bounded = metrics.BoundedLabel(limit=3)
    assert [bounded(v) for v in "abcdab"] == ["a", "b", "c", "other", "a", "b"]


async def test_every_dead_letter_is_counted_once(daemon: Daemon) -> None:
    from loom.broker.base import Message
    from loom.wire import WORK_EXCHANGE, WORK_ROUTING_KEY

    before = await scrape(daemon)
    await daemon.broker.publish(WORK_EXCHANGE, WORK_ROUTING_KEY, Message(body=b'{"x": 1}'))
    await drain(daemon)
    after = await scrape(daemon)
    assert delta(before, after, "loom_dead_letters_total", queue="loom.work") == 1
    assert delta(before, after, "loom_dead_letters_total", queue="loom.attention") == 0


async def test_signal_wait_is_recorded_once_and_not_for_observed_signals(daemon: Daemon) -> None:
    """A run that takes over the signals a dead run left does not record their wait again."""
    from loom.daemon.attention import pending_json

    state = daemon.state
    left = RuntimeSignal.create("left by a dead run", session_id="ops")
    await state.add_pending("ops", pending_json(left, "queue"))
    assert len(await state.take_pending("ops")) == 1  # the run that took it died
    for summary, action in (("new", "queue"), ("seen", "observe"), ("urgent", "interrupt")):
        await state.add_pending("ops", pending_json(RuntimeSignal.create(summary), action))
    await state.mark_ready("ops")
    before = await scrape(daemon)
    await daemon.worker.run_until_idle(timeout=5)
    after = await scrape(daemon)
    assert delta(before, after, "loom_lease_takeovers_total") == 1
    assert delta(before, after, "loom_runs_total", status="completed") == 1
    assert delta(before, after, "loom_signal_wait_seconds_count") == 2  # new and urgent
