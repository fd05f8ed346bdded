"""Tracing: one trace per signal from the gateway through attention to the worker's run,
carried by ``traceparent`` in the broker message and the pending-signal record."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import Agent, Model, ModelResponse, RuntimeSignal, ToolCall, tool, tracing
from loom.broker.rabbitmq import RabbitMQBroker
from loom.daemon.app import Daemon
from loom.daemon.http import build_app
from loom.daemon.settings import Settings
from loom.providers.base import ModelRequest
from loom.wire import ATTENTION_QUEUE, TOPOLOGY, PendingSignal, publish_signal
from tests.test_daemon_memory import drain

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@tool
def check(service: str) -> str:
    """Say a service is fine."""
    return f"{service} ok"


def script(request: ModelRequest) -> ModelResponse:
    if request.iteration == 1:
        return ModelResponse.of_tool_calls(ToolCall("c1", "check", {"service": "api"}))
    return ModelResponse(text="all good")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.set_tracer_provider(provider)
    yield spans
    tracing.set_tracer_provider(None)
    provider.shutdown()


@pytest.fixture
async def daemon(exporter: InMemorySpanExporter) -> AsyncIterator[Daemon]:
    settings = Settings(api_token="tok", worker={"sweep_interval": 0.05})  # type: ignore[arg-type]
    d = Daemon(Agent(Model.function(script), tools=[check]), settings=settings)
    await d.start()
    yield d
    await d.stop()


def by_name(spans: tuple[ReadableSpan, ...], trace_id: int) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans if s.context is not None and s.context.trace_id == trace_id}


async def test_a_signal_is_one_trace_from_the_gateway_to_the_run(
    daemon: Daemon, exporter: InMemorySpanExporter
) -> None:
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
        response = await client.post(
            "/signals",
            json={"summary": "deploy 7 failed", "session_id": "ops"},
            headers={"authorization": "Bearer tok", "traceparent": CALLER},
        )
    assert response.status_code == 202
    await drain(daemon)

    spans = by_name(exporter.get_finished_spans(), int(CALLER_TRACE, 16))
    hops = ["loom.gateway.accept", "loom.signal.publish", "loom.attention.decide",
            "loom.worker.run", "loom.run"]  # fmt: skip
    assert set(hops) | {"loom.model", "loom.tool"} == set(spans)
    # Each hop is the child of the one before: the context crossed the broker and the state.
    for parent, child in itertools.pairwise(hops):
        assert spans[child].parent is not None
        assert spans[child].parent.span_id == spans[parent].context.span_id, child
    assert spans["loom.gateway.accept"].parent.span_id == 0x00F067AA0BA902B7
    run = spans["loom.run"].context.span_id
    assert spans["loom.model"].parent.span_id == run
    assert spans["loom.tool"].parent.span_id == run
    signal_id = response.json()["id"]
    for hop in ("loom.gateway.accept", "loom.signal.publish"):  # worked out when recording
        attributes = dict(spans[hop].attributes or {})
        assert attributes["loom.signal_id"] == signal_id, hop
        assert attributes["loom.session_id"] == "ops", hop
        assert "loom.source" in attributes, hop
        assert "loom.type" in attributes, hop
    assert spans["loom.attention.decide"].attributes["loom.signal_id"] == signal_id
    assert spans["loom.attention.decide"].attributes["loom.decision"] == "queue"
    assert spans["loom.worker.run"].attributes["loom.status"] == "completed"
    assert spans["loom.run"].attributes["loom.status"] == "completed"
    assert spans["loom.tool"].attributes["gen_ai.tool.name"] == "check"
    assert spans["loom.attention.decide"].kind is trace.SpanKind.CONSUMER


async def test_a_signal_without_a_caller_starts_its_own_trace(
    daemon: Daemon, exporter: InMemorySpanExporter
) -> None:
    await publish_signal(daemon.broker, RuntimeSignal.create("hi", session_id="a"))
    await drain(daemon)
    [publish] = [s for s in exporter.get_finished_spans() if s.name == "loom.signal.publish"]
    assert publish.parent is None
    spans = by_name(exporter.get_finished_spans(), publish.context.trace_id)
    assert {"loom.signal.publish", "loom.attention.decide", "loom.worker.run", "loom.run"} <= set(
        spans
    )


async def test_a_run_for_several_signals_joins_the_first_and_links_the_others(
    daemon: Daemon, exporter: InMemorySpanExporter
) -> None:
    carriers = []
    for name in ("first", "second"):
        with tracing.span(name, parent={}):
            carriers.append(tracing.carrier())
    for text, carrier in zip(("a", "b"), carriers, strict=True):
        signal = RuntimeSignal.create(text, session_id="both")
        await daemon.state.add_pending("both", PendingSignal(signal, "queue", carrier).to_json())
    await daemon.state.mark_ready("both")
    await daemon.worker.run_until_idle(5)

    first, second = (s for s in exporter.get_finished_spans() if s.name in ("first", "second"))
    [worker] = [s for s in exporter.get_finished_spans() if s.name == "loom.worker.run"]
    assert worker.parent is not None
    assert worker.parent.span_id == first.context.span_id
    assert worker.context.trace_id == first.context.trace_id
    assert [link.context.span_id for link in worker.links] == [second.context.span_id]


async def test_the_broker_message_carries_traceparent(
    daemon: Daemon, exporter: InMemorySpanExporter
) -> None:
    await daemon.attention_consumer.stop()
    headers: list[dict[str, object]] = []

    async def take(delivery):  # type: ignore[no-untyped-def]
        headers.append(dict(delivery.headers))
        await delivery.ack()

    tag = await daemon.broker.consume(ATTENTION_QUEUE, take)
    await publish_signal(daemon.broker, RuntimeSignal.create("hi", session_id="a"))
    await daemon.broker.join()  # type: ignore[attr-defined]
    await daemon.broker.cancel(tag)
    [publish] = exporter.get_finished_spans()
    trace_id = format(publish.context.trace_id, "032x")
    span_id = format(publish.context.span_id, "016x")
    assert str(headers[0]["traceparent"]).startswith(f"00-{trace_id}-{span_id}-")


def test_without_an_sdk_provider_nothing_is_written() -> None:
    with tracing.span("quiet") as span:
        span.set_attribute("x", 1)
        assert tracing.carrier() == {}
        assert tracing.inject({"a": 1}) == {"a": 1}


def test_without_an_sdk_provider_a_callers_traceparent_is_passed_on_unchanged() -> None:
    """docs/observability.md: no span is recorded, none is made up, but the caller's trace
    goes on through Loom's messages to whatever records it further on."""
    with tracing.span("quiet", parent={"traceparent": CALLER}):
        assert tracing.inject({"a": 1}) == {"a": 1, "traceparent": CALLER}


def test_without_opentelemetry_tracing_is_a_no_op_and_import_loom_stays_light() -> None:
    code = """
import sys
import loom
assert 'opentelemetry' not in sys.modules, 'import loom imported opentelemetry'
sys.modules['opentelemetry'] = None  # as if the otel extra were not installed
from loom import tracing
assert not tracing.enabled()
with tracing.span('x', parent={'traceparent': 'junk'}) as span:
    span.set_attribute('k', 'v')
assert tracing.inject({'a': 1}) == {'a': 1}
assert tracing.carrier() == {}
with tracing.continued({'traceparent': 'x'}):
    pass
from loom import Agent
tracing.instrument(Agent('test'))
print('ok')
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


async def test_the_trace_crosses_rabbitmq_and_redis(exporter: InMemorySpanExporter) -> None:
    from tests.services import delete_redis_keys, require_rabbitmq, require_redis

    amqp, redis_url = require_rabbitmq(), require_redis()
    namespace = f"loomtest-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        broker_url=amqp,
        state_url=redis_url,
        namespace=namespace,
        worker={"sweep_interval": 0.2},  # type: ignore[arg-type]
    )
    daemon = Daemon(Agent(Model.function(script), tools=[check]), settings=settings)
    finished = asyncio.Event()
    daemon.agent.on("after_run", lambda **_: finished.set())
    await daemon.start()
    try:
        await publish_signal(daemon.broker, RuntimeSignal.create("deploy?", session_id="ops"))
        await asyncio.wait_for(finished.wait(), 15)
    finally:
        await daemon.stop()  # lets the worker finish: its span ends
        cleanup = RabbitMQBroker(amqp, topology=TOPOLOGY, namespace=namespace)
        await cleanup.start()
        await cleanup.delete_topology()
        await cleanup.close()
        await delete_redis_keys(redis_url, namespace)
    [publish] = [s for s in exporter.get_finished_spans() if s.name == "loom.signal.publish"]
    spans = by_name(exporter.get_finished_spans(), publish.context.trace_id)
    assert {"loom.attention.decide", "loom.worker.run", "loom.run", "loom.model"} <= set(spans)
    assert spans["loom.attention.decide"].parent.span_id == publish.context.span_id


def test_the_carrier_takes_the_propagation_headers_of_http_and_message_headers() -> None:
    from starlette.datastructures import Headers

    http = Headers(raw=[(b"traceparent", CALLER.encode()), (b"content-type", b"text/plain")])
    assert tracing.text_carrier(http) == {"traceparent": CALLER}
    assert tracing.text_carrier(Headers(raw=[(b"accept", b"*/*")])) == {}
    message = {"traceparent": CALLER.encode(), "tracestate": "k=v", "baggage": "", "x": "y"}
    assert tracing.text_carrier(message) == {"traceparent": CALLER, "tracestate": "k=v"}


async def test_without_an_sdk_provider_the_gateway_hands_the_callers_trace_to_the_broker() -> None:
    """The accept path skips spans and headers it has nothing for (``tracing.quiet``), but a
    caller's ``traceparent`` still goes on with the signal, and none is made up."""
    settings = Settings(api_token="tok")
    d = Daemon(Agent(Model.function(script), tools=[check]), settings=settings)
    await d.start()
    headers: list[dict[str, object]] = []
    try:
        await d.attention_consumer.stop()

        async def take(delivery):  # type: ignore[no-untyped-def]
            headers.append(dict(delivery.headers))
            await delivery.ack()

        tag = await d.broker.consume(ATTENTION_QUEUE, take)
        transport = httpx.ASGITransport(app=build_app(d, gateway=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
            for caller in ({"traceparent": CALLER}, {}):
                response = await client.post(
                    "/signals",
                    json={"summary": "deploy 7 failed", "session_id": "ops"},
                    headers={"authorization": "Bearer tok", **caller},
                )
                assert response.status_code == 202
        await d.broker.join()  # type: ignore[attr-defined]
        await d.broker.cancel(tag)
    finally:
        await d.stop()
    assert headers == [{"traceparent": CALLER}, {}]
