"""Metrics: drive a scripted flow in process, scrape /metrics, check exact deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loom import Agent, Model, ModelResponse, RuntimeSignal, ToolCall, tool
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.daemon.signals_io import publish_signal
from loom.providers.base import ModelRequest
from loom.runtime.messages import Usage
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
async def daemon() -> AsyncIterator[Daemon]:
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
    assert delta(before, after, "loom_signal_wait_seconds_count") == 2  # queued + observed
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
    from loom.broker.base import SIGNALS_EXCHANGE, Message

    before = await scrape(daemon)
    await daemon.broker.publish(SIGNALS_EXCHANGE, "x.y", Message(body=b"{oops"))
    await drain(daemon)
    after = await scrape(daemon)
    assert delta(before, after, "loom_dead_letters_total", queue="loom.attention") == 1
