"""Prometheus metrics: the one module where Loom's figures are defined and recorded.

Names follow Prometheus conventions (``loom_`` prefix, base units, ``_total`` counters); no
session, user or run ids as labels. The daemon records the signal and worker figures; the
kernel's run, model, token, cost and tool figures come from the agent's hooks through
``instrument(agent)``.

Labels whose values come from outside stay bounded: a tool label is the name of one of the
agent's tools or ``unknown`` (a model may call a tool that does not exist), and a signal's
source and type keep the first ``MAX_LABEL_VALUES`` distinct values each, later ones being
counted as ``other`` (senders choose them).

Every process serves its own registry on ``/metrics`` (prometheus_client's default, not its
multiprocess mode): run one worker process per pod, as the chart does, and let Prometheus
sum over pods. Gauges are this process's figures.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from loom.core.hooks import HookSource

MAX_LABEL_VALUES = 100
"""Distinct values a sender-chosen label (a signal's source, its type) keeps as they are."""
OTHER = "other"
UNKNOWN_TOOL = "unknown"


class BoundedLabel:
    """The first ``limit`` distinct values of a label pass as they are; later ones become
    ``other``, so a sender cannot create series without end. Per process: the values a
    process saw first are the ones it keeps."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


SIGNALS_RECEIVED = Counter(
    "loom_signals_received_total",
    f"Signals the attention role received, by source and type (the first {MAX_LABEL_VALUES} "
    "distinct values of each; later ones are 'other').",
    ["source", "type"],
)
_SOURCES = BoundedLabel()
_TYPES = BoundedLabel()
DECISIONS = Counter(
    "loom_attention_decisions_total", "Attention decisions, by decision.", ["decision"]
)
DEDUPE_HITS = Counter(
    "loom_dedupe_hits_total", "Signals dropped because their dedupe key was already seen."
)
DEAD_LETTERS = Counter(
    "loom_dead_letters_total",
    "Messages dead-lettered, by the queue they came from: by a handler, or past the delivery "
    "limit.",
    ["queue"],
)
SIGNAL_WAIT = Histogram(
    "loom_signal_wait_seconds",
    "Time from a signal's observation to the start of the run that handles it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
RUNS = Counter("loom_runs_total", "Finished runs, by status.", ["status"])
RUN_DURATION = Histogram(
    "loom_run_duration_seconds",
    "Run duration.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800),
)
ACTIVE_RUNS = Gauge("loom_active_runs", "Runs in progress in this process.")
MODEL_CALLS = Counter("loom_model_calls_total", "Model calls, by model.", ["model"])
TOKENS = Counter(
    "loom_tokens_total", "Tokens, by model and direction (input, output).", ["model", "direction"]
)
COST = Counter("loom_cost_usd_total", "Model cost in US dollars, by model.", ["model"])
TOOL_CALLS = Counter(
    "loom_tool_calls_total",
    "Tool calls, by tool ('unknown' for a name the agent has no tool of) and outcome (ok, error).",
    ["tool", "outcome"],
)
INTERRUPTS = Counter("loom_interrupts_total", "Runs interrupted by a signal.")
ATTENTION_CARRIED_OVER = Counter(
    "loom_attention_carried_over_total",
    "Signals an interrupted run handed on untreated to the next run of its session.",
)
ATTENTION_INTERRUPT_SECONDS = Histogram(
    "loom_attention_interrupt_seconds",
    "Seconds from an interrupt reaching a run to the run's end.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
ATTENTION_DEBOUNCED = Counter(
    "loom_attention_debounced_total",
    "Signals whose run was put off (debounce, minimum interval) instead of started at once.",
)
ATTENTION_FOLDED = Counter(
    "loom_attention_folded_total",
    "Signals folded into a run already due for their session (same group or session).",
)
LEASE_TAKEOVERS = Counter(
    "loom_lease_takeovers_total", "Sessions taken over with signals a dead run left in flight."
)
POISONED_SESSIONS = Counter(
    "loom_sessions_given_up_total",
    "Times a session's in-flight signals went to the dead letters after the worker failed "
    "on them worker.max_attempts times in a row.",
)
REPLIES = Counter(
    "loom_replies_total",
    "Replies to signals' reply_to addresses, by adapter and outcome (sent, error, undeliverable).",
    ["adapter", "outcome"],
)
ACTIVE_SESSIONS = Gauge(
    "loom_active_sessions", "Sessions a worker in this process holds, running or about to run."
)
CONSUMERS = Gauge(
    "loom_consumers",
    "Consumers of a queue started and not stopped in this process (loom.attention, loom.work).",
    ["queue"],
)
FEEDBACK_EVENTS = Counter(
    "loom_feedback_events_total",
    "Feedback events recorded, by kind (run_outcome, tool_failure, quality_verdict, explicit).",
    ["kind"],
)
QUALITY_VERDICTS = Counter(
    "loom_quality_verdicts_total", "Quality verdicts on runs, by verdict (pass, fail).", ["verdict"]
)
GOVERNANCE_DENIALS = Counter(
    "loom_governance_denials_total",
    "Tool calls governance denied, by rule (deny, allow, read_only, destructive, veto, "
    "rate_limit, hook, error, approval for a denied approval) and tool.",
    ["rule", "tool"],
)
GOVERNANCE_RULES = frozenset(
    {"deny", "allow", "read_only", "destructive", "veto", "approval", "rate_limit", "hook", "error"}
)
"""The values of the ``rule`` label (``loom.core.governance.Ruling.rule``); others count
as ``other``."""
APPROVALS_REQUESTED = Counter(
    "loom_approvals_requested_total", "Tool calls that asked a person for approval."
)
APPROVALS_DECIDED = Counter(
    "loom_approvals_decided_total",
    "Approval requests a person decided, by decision (approve, deny).",
    ["decision"],
)
APPROVALS_EXPIRED = Counter(
    "loom_approvals_expired_total", "Approval requests nobody decided in time (denied as expired)."
)
APPROVAL_DECISION_SECONDS = Histogram(
    "loom_approval_decision_seconds",
    "Time from an approval request to its decision.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)
SUSPENDED_RUNS = Gauge(
    "loom_suspended_runs",
    "Runs suspended while they await approvals (holding no worker slot and no lease), as "
    "counted by the process that serves it.",
)
HTTP_REQUESTS = Counter(
    "loom_http_requests_total",
    "HTTP requests served, by route template (never the raw path) and status code.",
    ["route", "status"],
)
HTTP_DURATION = Histogram(
    "loom_http_request_duration_seconds",
    "HTTP request latency until the response is sent, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROBE_UP = Gauge(
    "loom_probe_up",
    "1 when the heartbeat's probe last found its service up, else 0 (by probe name).",
    ["probe"],
)
MCP_SERVER_READY = Gauge(
    "loom_mcp_server_ready",
    "1 while the MCP server's connection is open, else 0 (by configured server name).",
    ["server"],
)
MCP_SERVER_DEGRADED = Gauge(
    "loom_mcp_server_degraded",
    "1 while the MCP server keeps failing to start (degrade_after failures in a row).",
    ["server"],
)
MCP_RESTARTS = Counter(
    "loom_mcp_restarts_total",
    "MCP connections opened again after a failed start or a lost connection.",
    ["server"],
)

_INSTRUMENTED = "_loom_metrics"


def mcp_server_state(server: str, *, ready: bool, degraded: bool) -> None:
    MCP_SERVER_READY.labels(server).set(1 if ready else 0)
    MCP_SERVER_DEGRADED.labels(server).set(1 if degraded else 0)


def mcp_restarted(server: str) -> None:
    MCP_RESTARTS.labels(server).inc()


def signal_received(source: str, type_: str) -> None:
    """Count a signal the attention role received, its source and type bounded."""
    _child(SIGNALS_RECEIVED, _SOURCES(source), _TYPES(type_)).inc()


def decided(action: str) -> None:
    """Count an attention decision."""
    _child(DECISIONS, action).inc()


def approval_decided(approval: Any) -> None:
    """Count a decision a person took on an approval (``loom.core.approvals.Approval``),
    and how long it waited for it."""
    APPROVALS_DECIDED.labels(approval.decision.value).inc()
    if approval.requested_at is not None and approval.decided_at is not None:
        waited = (approval.decided_at - approval.requested_at).total_seconds()
        APPROVAL_DECISION_SECONDS.observe(max(waited, 0.0))


def governance_denied(rule: str, tool: str) -> None:
    """Count a tool call governance denied: ``rule`` is the ``Ruling``'s, ``tool`` the name
    of one of the agent's tools (or ``unknown``), so both labels stay bounded."""
    _child(GOVERNANCE_DENIALS, rule if rule in GOVERNANCE_RULES else OTHER, tool).inc()


_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, kept: ``labels()`` costs a lock and a few conversions,
    and the attention role counts twice per signal. Bounded as the label values are."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


class Instrumented(HookSource, Protocol):
    """An agent as metrics sees it: hooks, and the names of its own tools."""

    @property
    def tools(self) -> Container[str]: ...


def instrument(agent: Instrumented) -> None:
    """Record the agent's runs, model calls, tokens, cost and tool calls (idempotent)."""
    if getattr(agent, _INSTRUMENTED, False):
        return
    setattr(agent, _INSTRUMENTED, True)
    agent.on("before_run", _run_started)
    agent.on("after_run", _run_finished)
    agent.on("after_llm", _model_called)

    def tool_called(*, tool_name: str, success: bool, **_: Any) -> None:
        # The name comes from the model: only the agent's own tools become label values.
        tool = tool_name if tool_name in agent.tools else UNKNOWN_TOOL
        TOOL_CALLS.labels(tool, "ok" if success else "error").inc()

    agent.on("after_tool", tool_called)


_started: set[str] = set()  # runs counted as active (a run cancelled while queued never is)


def _run_started(*, run_id: str, **_: Any) -> None:
    _started.add(run_id)
    ACTIVE_RUNS.inc()


def _run_finished(*, run_id: str, result: dict[str, Any], **_: Any) -> None:
    if run_id in _started:
        _started.discard(run_id)
        ACTIVE_RUNS.dec()
    RUNS.labels(result["status"]).inc()
    RUN_DURATION.observe(float(result.get("duration") or 0.0))


def _model_called(*, response: Any, request: Any = None, **_: Any) -> None:
    if response is None:  # a failed call: counted with the failed run
        return
    model = response.model or "unknown"
    usage = response.usage
    MODEL_CALLS.labels(model).inc()
    TOKENS.labels(model, "input").inc(usage.input_tokens)
    TOKENS.labels(model, "output").inc(usage.output_tokens)
    if usage.cost_usd:
        COST.labels(model).inc(usage.cost_usd)
