"""Optional OpenTelemetry tracing: a span per hop and per run, one trace per signal.

With ``opentelemetry`` importable (the ``otel`` extra) Loom makes spans through the global
tracer provider (or the one given to ``set_tracer_provider``): ``loom.gateway.accept`` and
``loom.signal.publish`` in the gateway, ``loom.attention.decide`` in the attention role,
``loom.worker.run`` in the worker, and ``loom.run`` with ``loom.model`` and ``loom.tool``
children for each run (``instrument(agent)``). The W3C ``traceparent`` travels with the
signal in the broker message's headers, and from the attention role to the worker in the
session's pending-signal record, because a run handles several signals and may start from a
sweep rather than from a message. Without ``opentelemetry`` every function here does nothing.
Until an SDK tracer provider is installed, the API's spans are non-recording: Loom makes up
no trace context, but a ``traceparent`` the sender gave is passed on unchanged (the API's
non-recording span carries its caller's context), so the trace goes on past Loom.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from loom._version import __version__
from loom.core.hooks import HookSource

if TYPE_CHECKING:
    from loom.signals import RuntimeSignal

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace

    _AVAILABLE = True
    # The providers that make no recording spans (a tuple: ``A | B`` is built at each use).
    _NOT_RECORDING: tuple[type, ...] = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
except ImportError:  # the otel extra is not installed: tracing is off
    _AVAILABLE = False

Kind = Literal["internal", "server", "client", "producer", "consumer"]
Carrier = Mapping[str, str]
PROPAGATION_HEADERS = ("traceparent", "tracestate", "baggage")


class SpanLike(Protocol):
    """What Loom uses of a span; a real OpenTelemetry span or a no-op one."""

    def set_attribute(self, key: str, value: Any) -> None: ...


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        return None


_NO_SPAN = _NoSpan()
_provider: Any = None


def enabled() -> bool:
    """True when OpenTelemetry is importable (spans record only with an SDK provider)."""
    return _AVAILABLE


def set_tracer_provider(provider: Any) -> None:
    """Use ``provider`` instead of the global tracer provider (None: back to the global)."""
    global _provider
    _provider = provider


def _tracer() -> Any:
    return trace.get_tracer("loom", __version__, tracer_provider=_provider)


def _recording() -> bool:
    """True once a real (SDK) tracer provider is in place. Until then spans would be
    non-recording, and making them costs tens of microseconds per hop for nothing."""
    provider = _provider if _provider is not None else trace.get_tracer_provider()
    return not isinstance(provider, _NOT_RECORDING)


def recording() -> bool:
    """True when spans are recorded (OpenTelemetry and an SDK tracer provider): what a
    span's attributes are worked out for, on paths that run for every signal."""
    return _AVAILABLE and _recording()


def quiet() -> bool:
    """True when a hop has nothing to trace: no span would be recorded and the current
    context holds no caller's trace to pass on. Then ``span(name)`` (no ``parent``) gives
    ``_QUIET`` and ``inject`` writes nothing, so a hop that runs for every signal can skip
    both, and ask this once instead of once each."""
    return not _AVAILABLE or not (_recording() or _ambient())


def signal_attributes(signal: RuntimeSignal) -> dict[str, Any]:
    """The attributes of a span about one signal."""
    return {
        "loom.signal_id": signal.id,
        "loom.source": signal.source,
        "loom.type": signal.type,
        "loom.session_id": signal.session_id,
    }


def _kind(kind: Kind) -> Any:
    return getattr(trace.SpanKind, kind.upper())


def text_carrier(headers: Mapping[str, Any]) -> dict[str, str]:
    """The propagation headers among message or HTTP headers, as text."""
    carrier: dict[str, str] = {}
    for name in PROPAGATION_HEADERS:
        # ``in`` first: most requests have none of these, and a missing name costs
        # Starlette's ``Headers.get`` a KeyError raised and caught.
        if name not in headers:
            continue
        value = headers.get(name)
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str) and value:
            carrier[name] = value
    return carrier


_QUIET = nullcontext(_NO_SPAN)
"""The context of a span that is not made; stateless, so one instance serves every call."""


def span(
    name: str,
    *,
    kind: Kind = "internal",
    parent: Carrier | None = None,
    links: Sequence[Carrier] = (),
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[SpanLike]:
    """A span current for the block. ``parent`` is a carrier to continue (an empty one
    starts a new trace); None continues the current context. ``links`` are carriers of
    other traces the work belongs to too."""
    if not _AVAILABLE:
        return _QUIET
    if not _recording():
        # No span, but the caller's trace (or, for an empty carrier, none) is current for
        # the block, so inject() passes on exactly what a non-recording span would. This
        # runs for every message while tracing is off: the common cases cost no context.
        if parent is None or (not parent and not _ambient()):
            return _QUIET
        return _attached(propagate.extract(parent))
    return _recording_span(name, kind, parent, links, attributes)


def _ambient() -> bool:
    """True unless the current context is empty (then it holds no trace or baggage to pass
    on); cheaper than asking for either. Empty for every message while tracing is off."""
    return bool(otel_context.get_current())


@contextmanager
def _attached(context: Any) -> Iterator[SpanLike]:
    token = otel_context.attach(context)
    try:
        yield _NO_SPAN
    finally:
        otel_context.detach(token)


@contextmanager
def _recording_span(
    name: str,
    kind: Kind,
    parent: Carrier | None,
    links: Sequence[Carrier],
    attributes: Mapping[str, Any] | None,
) -> Iterator[SpanLike]:
    context = propagate.extract(parent) if parent is not None else None
    linked = []
    for carrier in links:
        span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        if span_context.is_valid:
            linked.append(trace.Link(span_context))
    with _tracer().start_as_current_span(
        name,
        context=context,
        kind=_kind(kind),
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
        links=linked,
    ) as current:
        yield current


def continued(headers: Mapping[str, Any]) -> AbstractContextManager[SpanLike | None]:
    """Make the caller's trace (from its ``traceparent`` header) current for the block."""
    if not _AVAILABLE:
        return nullcontext()
    carrier = text_carrier(headers)
    if not carrier:
        return nullcontext()
    return _attached(propagate.extract(carrier))


def inject(headers: dict[str, Any]) -> dict[str, Any]:
    """Write the current span's propagation headers into ``headers`` (none without a
    recording span); returns ``headers``."""
    if _AVAILABLE and (_recording() or _ambient()):
        propagate.inject(headers)
    return headers


def carrier() -> dict[str, str]:
    """The current span's propagation headers, to keep with work handed on."""
    return text_carrier(inject({}))


# -- runs, model calls and tool calls, from the agent's hooks ------------------------------
@dataclass(slots=True)
class _RunSpans:
    run: Any
    children: dict[str, Any] = field(default_factory=dict)


_INSTRUMENTED = "_loom_tracing"


def instrument(agent: HookSource) -> None:
    """Trace the agent's runs, model calls and tool calls (idempotent; no-op without
    OpenTelemetry)."""
    if not _AVAILABLE or getattr(agent, _INSTRUMENTED, False):
        return
    setattr(agent, _INSTRUMENTED, True)
    runs: dict[str, _RunSpans] = {}

    def run_started(*, run_id: str, session_id: str, **_: Any) -> None:
        # The hook runs in the run's task, whose context is the starter's: the worker's
        # span (or the caller's) becomes the run's parent.
        attributes = {"loom.run_id": run_id, "loom.session_id": session_id}
        runs[run_id] = _RunSpans(_tracer().start_span("loom.run", attributes=attributes))

    def run_finished(*, run_id: str, result: Mapping[str, Any], **_: Any) -> None:
        spans = runs.pop(run_id, None)
        if spans is None:  # cancelled before it started
            return
        for child in spans.children.values():  # a step the run was stopped in
            child.set_attribute("loom.stopped", True)
            child.end()
        usage = result.get("usage") or {}
        run = spans.run
        run.set_attribute("loom.status", result["status"])
        run.set_attribute("gen_ai.usage.input_tokens", int(usage.get("input_tokens", 0)))
        run.set_attribute("gen_ai.usage.output_tokens", int(usage.get("output_tokens", 0)))
        run.set_attribute("loom.cost_usd", float(usage.get("cost_usd", 0.0)))
        if result["status"] != "completed":
            run.set_status(trace.Status(trace.StatusCode.ERROR, str(result.get("error") or "")))
        run.end()

    def child(run_id: str, key: str, name: str, attributes: Mapping[str, Any]) -> None:
        spans = runs.get(run_id)
        if spans is not None:
            parent = trace.set_span_in_context(spans.run)
            spans.children[key] = _tracer().start_span(name, context=parent, attributes=attributes)

    def finish_child(run_id: str, key: str, error: str | None, **attributes: Any) -> None:
        spans = runs.get(run_id)
        current = spans.children.pop(key, None) if spans is not None else None
        if current is None:
            return
        for name, value in attributes.items():
            if value is not None:
                current.set_attribute(name, value)
        if error:
            current.set_status(trace.Status(trace.StatusCode.ERROR, error))
        current.end()

    def model_started(*, run_id: str, iteration: int, **_: Any) -> None:
        child(run_id, f"llm:{iteration}", "loom.model", {"loom.iteration": iteration})

    def model_finished(
        *, run_id: str, iteration: int, response: Any, error: str | None, **_: Any
    ) -> None:
        usage = response.usage if response is not None else None
        finish_child(
            run_id,
            f"llm:{iteration}",
            error,
            **{
                "gen_ai.response.model": response.model if response is not None else None,
                "gen_ai.usage.input_tokens": usage.input_tokens if usage else None,
                "gen_ai.usage.output_tokens": usage.output_tokens if usage else None,
            },
        )

    def tool_started(*, run_id: str, tool_name: str, tool_call_id: str, **_: Any) -> None:
        attributes = {"gen_ai.tool.name": tool_name, "gen_ai.tool.call.id": tool_call_id}
        child(run_id, f"tool:{tool_call_id}", "loom.tool", attributes)

    def tool_finished(*, run_id: str, tool_call_id: str, success: bool, **_: Any) -> None:
        finish_child(run_id, f"tool:{tool_call_id}", None if success else "tool call failed")

    agent.on("before_run", run_started)
    agent.on("after_run", run_finished)
    agent.on("before_llm", model_started)
    agent.on("after_llm", model_finished)
    agent.on("before_tool", tool_started)
    agent.on("after_tool", tool_finished)


__all__ = [
    "carrier",
    "continued",
    "enabled",
    "inject",
    "instrument",
    "quiet",
    "recording",
    "set_tracer_provider",
    "signal_attributes",
    "span",
    "text_carrier",
]
