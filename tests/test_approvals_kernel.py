"""Approvals in one process: a call that needs a person pauses the run, which resumes on the
decision; denials reach the model; checkpoints resume anywhere; journaled calls run once."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from loom import Agent, Model, ModelRequest, ModelResponse, RunStatus, Runtime, ToolCall, tool
from loom.core.approvals import (
    ApprovalAlreadyDecided,
    ApprovalDigestMismatch,
    Decision,
    UnknownApproval,
    argument_digest,
)
from loom.core.checkpoints import MemoryToolJournal, RunCheckpoint
from loom.core.governance import RateLimits, Ruling, ToolCallInfo, Verdict
from loom.core.hooks import DenyCall
from tests.polling import eventually


@dataclass
class Rules:
    """A governor from a table: tool name -> verdict (ALLOW when absent)."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    raises: set[str] = field(default_factory=set)
    admitted: list[str] = field(default_factory=list)

    async def review(self, call: ToolCallInfo) -> Ruling:
        if call.tool in self.raises:
            raise RuntimeError("secret-token-123 in a broken rule")
        verdict = self.verdicts.get(call.tool, Verdict.ALLOW)
        return Ruling(verdict, f"{call.tool} is governed", "table")

    async def admit(self, call: ToolCallInfo, limits: RateLimits) -> Ruling:
        self.admitted.append(call.tool)
        return Ruling(Verdict.ALLOW)


class Effects:
    def __init__(self) -> None:
        self.done: list[tuple[str, dict[str, Any]]] = []


def make_agent(
    script: Any, rules: Rules, effects: Effects, **runtime: Any
) -> tuple[Agent, Any, Any]:
    @tool
    def restart(service: str) -> str:
        """Restart a service."""
        effects.done.append(("restart", {"service": service}))
        return f"restarted {service}"

    @tool(read_only=True)
    def status(service: str) -> str:
        """Read a service's status."""
        effects.done.append(("status", {"service": service}))
        return f"{service} is up"

    agent = Agent(Model.function(script), tools=[restart, status], runtime=Runtime.sdk(**runtime))
    agent.loop.govern(rules, _NoLimits())
    return agent, restart, status


class _NoLimits:
    async def take(self, key: str, limit: int, window: float) -> float | None:
        return None


def turns(*calls: ToolCall) -> Any:
    """First turn: the calls; then the last tool results, echoed as the answer."""

    def script(request: ModelRequest) -> ModelResponse | str:
        if request.iteration == 1:
            return ModelResponse.of_tool_calls(*calls)
        results = [m for m in request.messages if m.role == "tool"]
        return " | ".join(f"{m.tool_name}: {m.content}" for m in results)

    return script


def ask(*tools: str) -> Rules:
    return Rules(dict.fromkeys(tools, Verdict.ASK))


async def test_a_call_that_needs_approval_pauses_the_run_until_approved() -> None:
    effects = Effects()
    agent, _, _ = make_agent(
        turns(ToolCall("c1", "restart", {"service": "api"})), ask("restart"), effects
    )
    run = agent.session("ops").start("restart the api")

    paused = await run.wait()

    assert paused.status is RunStatus.AWAITING_APPROVAL
    (approval,) = paused.approvals
    assert (approval.tool, approval.arguments) == ("restart", {"service": "api"})
    assert approval.digest == argument_digest("restart", {"service": "api"})
    assert approval.expires_at > paused.started_at  # type: ignore[operator]
    assert effects.done == []  # nothing ran while waiting
    assert not run.done()

    run.approve(approval.id, "go ahead", by="alice")
    result = await run.wait()

    assert result.status is RunStatus.COMPLETED
    assert effects.done == [("restart", {"service": "api"})]
    assert result.output == "restart: restarted api"
    types = [e.type for e in result.events]
    assert types.index("run.awaiting_approval") < types.index("run.resumed")
    assert types.index("run.resumed") < types.index("tool.started")


async def test_a_denied_call_never_runs_and_the_model_reads_why() -> None:
    effects = Effects()
    agent, _, _ = make_agent(
        turns(ToolCall("c1", "restart", {"service": "db"})), ask("restart"), effects
    )
    session = agent.session("ops")
    run = session.start("restart the db")
    (approval,) = (await run.wait()).approvals
    assert session.approvals == (approval,)

    session.deny(approval.id, "not during business hours", by="bob")
    result = await run.wait()

    assert result.status is RunStatus.COMPLETED
    assert effects.done == []
    assert "denied by bob: not during business hours" in result.output
    denied = [e for e in result.events if e.type == "tool.denied"]
    assert denied[0].payload["rule"] == "approval"


async def test_no_call_of_a_turn_runs_until_every_approval_of_it_is_decided() -> None:
    effects = Effects()
    script = turns(
        ToolCall("c1", "status", {"service": "api"}),
        ToolCall("c2", "restart", {"service": "api"}),
        ToolCall("c3", "restart", {"service": "web"}),
    )
    agent, _, _ = make_agent(script, ask("restart"), effects)
    run = agent.session("ops").start("fix it")
    first, second = (await run.wait()).approvals

    run.approve(first.id)
    await asyncio.sleep(0.05)
    assert effects.done == []  # the allowed read and the approved call both wait for c3
    assert run.status is RunStatus.AWAITING_APPROVAL

    run.deny(second.id, "one at a time")
    result = await run.wait()

    assert [name for name, _ in effects.done] == ["status", "restart"]
    assert result.status is RunStatus.COMPLETED
    assert "one at a time" in result.output


async def test_governance_denial_is_a_tool_error_the_model_sees() -> None:
    effects = Effects()
    rules = Rules({"restart": Verdict.DENY})
    agent, _, _ = make_agent(turns(ToolCall("c1", "restart", {"service": "api"})), rules, effects)

    result = await agent.run("restart the api")

    assert result.status is RunStatus.COMPLETED
    assert effects.done == []
    assert "tool call denied (table): restart is governed" in result.output
    (denied,) = [e for e in result.events if e.type == "tool.denied"]
    assert denied.payload["tool_name"] == "restart"
    assert denied.payload["rule"] == "table"


async def test_a_rule_that_raises_fails_closed_without_leaking_its_text() -> None:
    effects = Effects()
    rules = Rules(raises={"restart"})
    agent, _, _ = make_agent(turns(ToolCall("c1", "restart", {"service": "api"})), rules, effects)

    result = await agent.run("restart the api")

    assert effects.done == []
    assert "the governance check failed (RuntimeError)" in result.output
    assert "secret-token-123" not in result.output


async def test_before_tool_may_deny_or_rewrite_and_fails_closed() -> None:
    effects = Effects()
    script = turns(
        ToolCall("c1", "status", {"service": "api"}),
        ToolCall("c2", "restart", {"service": "api"}),
    )
    agent, _, _ = make_agent(script, Rules(), effects)

    def hook(tool_name: str, arguments: dict[str, Any], **_: Any) -> Any:
        if tool_name == "restart":
            return DenyCall("restarts are frozen")
        return {"service": arguments["service"].upper()}

    agent.on("before_tool", hook)
    result = await agent.run("go")

    assert effects.done == [("status", {"service": "API"})]
    assert "restarts are frozen" in result.output

    def broken(**_: Any) -> None:
        raise ValueError("boom")

    agent.off("before_tool")
    agent.on("before_tool", broken)
    effects.done.clear()
    result = await agent.run("go")
    assert effects.done == []
    assert result.output.count("a before_tool hook failed (ValueError)") == 2


async def test_an_approval_left_undecided_expires_as_a_denial() -> None:
    effects = Effects()
    agent, _, _ = make_agent(
        turns(ToolCall("c1", "restart", {"service": "api"})),
        ask("restart"),
        effects,
        approval_ttl=0.05,
    )

    run = agent.session("ops").start("restart")
    assert (await run.wait()).status is RunStatus.AWAITING_APPROVAL
    await asyncio.sleep(0.1)
    result = await run.wait()

    assert result.status is RunStatus.COMPLETED
    assert effects.done == []
    assert "approval expired" in result.output


async def test_the_run_timeout_does_not_count_the_wait_for_people() -> None:
    effects = Effects()
    agent, _, _ = make_agent(
        turns(ToolCall("c1", "restart", {"service": "api"})), ask("restart"), effects, timeout=0.3
    )
    run = agent.session("ops").start("restart")
    (approval,) = (await run.wait()).approvals
    await asyncio.sleep(0.5)

    run.approve(approval.id)
    result = await run.wait()

    assert result.status is RunStatus.COMPLETED, result.error
    assert effects.done == [("restart", {"service": "api"})]


@pytest.mark.parametrize("stop", ["interrupt", "cancel"])
async def test_stopping_a_waiting_run_closes_its_calls(stop: str) -> None:
    effects = Effects()
    agent, _, _ = make_agent(
        turns(ToolCall("c1", "restart", {"service": "api"})), ask("restart"), effects
    )
    session = agent.session("ops")
    run = session.start("restart")
    await run.wait()

    getattr(run, stop)("an operator stopped it")
    result = await run.wait()

    expected = RunStatus.INTERRUPTED if stop == "interrupt" else RunStatus.CANCELLED
    assert result.status is expected
    assert effects.done == []
    tool_results = [m for m in session.history if m.role == "tool"]
    assert [m.tool_call_id for m in tool_results] == ["c1"]  # no dangling call
    assert tool_results[0].is_error


async def test_decisions_are_checked() -> None:
    effects = Effects()
    agent, _, _ = make_agent(
        turns(ToolCall("c1", "restart", {"service": "api"})), ask("restart"), effects
    )
    run = agent.session("ops").start("restart")
    (approval,) = (await run.wait()).approvals

    with pytest.raises(UnknownApproval):
        run.approve("apr_nope")
    with pytest.raises(ApprovalDigestMismatch):
        run.decide(
            approval.id, Decision.APPROVE, digest=argument_digest("restart", {"service": "db"})
        )
    run.decide(approval.id, "approve", digest=approval.digest, by="alice")
    decided = approval.decide("approve", by="alice")
    assert decided.decide("approve") is decided  # the same decision again is harmless
    with pytest.raises(ApprovalAlreadyDecided, match="already decided: approve by alice"):
        decided.decide("deny")
    assert (await run.wait()).status is RunStatus.COMPLETED


async def test_a_suspended_run_resumes_from_its_checkpoint_in_another_agent() -> None:
    effects = Effects()
    script = turns(
        ToolCall("c1", "status", {"service": "api"}), ToolCall("c2", "restart", {"service": "api"})
    )
    first, _, _ = make_agent(script, ask("restart"), effects)
    run = first.session("ops").start("fix the api")
    assert (await run.wait()).status is RunStatus.AWAITING_APPROVAL

    assert run.suspend()
    suspended = await run.wait()
    assert suspended.status is RunStatus.AWAITING_APPROVAL
    assert run.done()
    assert [e.type for e in suspended.events][-1] == "run.suspended"
    assert effects.done == []
    assert suspended.checkpoint is not None
    stored = json.dumps(suspended.checkpoint.to_dict())  # what a worker writes

    # Another process: a new agent, the decision recorded on the checkpoint.
    checkpoint = RunCheckpoint.from_dict(json.loads(stored))
    (approval,) = checkpoint.pending
    checkpoint = checkpoint.with_approval(approval.decide("approve", by="alice"))
    second, _, _ = make_agent(script, ask("restart"), effects)
    resumed = second.session("ops").resume(checkpoint, journal=MemoryToolJournal())
    result = await resumed.wait()

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.run_id == run.id
    assert [name for name, _ in effects.done] == ["status", "restart"]
    history = second.session("ops").history
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool", "assistant"]


async def test_a_call_started_before_a_crash_is_not_run_again() -> None:
    effects = Effects()
    script = turns(
        ToolCall("c1", "restart", {"service": "api"}), ToolCall("c2", "status", {"service": "api"})
    )
    agent, _, status = make_agent(script, ask("restart"), effects)
    run = agent.session("ops").start("go")
    (approval,) = (await run.wait()).approvals
    run.suspend()
    checkpoint = (await run.wait()).checkpoint
    assert checkpoint is not None
    checkpoint = checkpoint.with_approval(approval.decide("approve"))

    # The worker that resumed it died inside restart (started, never finished); status
    # had finished and its result was recorded.
    journal = MemoryToolJournal()
    await journal.started(run.id, "c1")
    await journal.finished(run.id, "c2", "api was up (recorded)", False)
    result = (
        await agent.session("ops2")
        .resume(
            checkpoint.__class__.from_dict({**checkpoint.to_dict(), "session_id": "ops2"}),
            journal=journal,
        )
        .wait()
    )

    assert effects.done == []  # neither runs again
    assert "outcome unknown" in result.output
    assert "api was up (recorded)" in result.output

    # An idempotent tool is simply run again.
    status.idempotent = True  # as @tool(idempotent=True) would set it
    journal = MemoryToolJournal()
    await journal.finished(run.id, "c1", "restarted api (recorded)", False)
    await journal.started(run.id, "c2")
    await (
        agent.session("ops3")
        .resume(
            checkpoint.__class__.from_dict({**checkpoint.to_dict(), "session_id": "ops3"}),
            journal=journal,
        )
        .wait()
    )
    assert [name for name, _ in effects.done] == ["status"]


async def test_governance_admits_calls_only_when_they_run() -> None:
    effects = Effects()
    rules = ask("restart")
    agent, _, _ = make_agent(turns(ToolCall("c1", "restart", {"service": "api"})), rules, effects)
    run = agent.session("ops").start("go")
    (approval,) = (await run.wait()).approvals
    assert rules.admitted == []

    run.deny(approval.id)
    await run.wait()
    assert rules.admitted == []  # a denied call takes no rate-limit use


async def test_an_approval_signal_decides_for_the_waiting_run_in_one_process() -> None:
    from loom import RuntimeSignal

    effects = Effects()
    script = turns(ToolCall("c1", "restart", {"service": "api"}))
    agent, _, _ = make_agent(script, ask("restart"), effects)
    run = agent.session("ops").start("restart")
    (approval,) = (await run.wait()).approvals

    decision = await agent.receive(
        RuntimeSignal.create(
            "approved in chat",
            type="approval",
            session_id="ops",
            payload={"approval_id": approval.id, "decision": "approve", "by": "carol"},
        )
    )

    assert decision.action == "resume"
    assert (await run.wait()).status is RunStatus.COMPLETED
    assert effects.done == [("restart", {"service": "api"})]


async def test_a_call_denied_while_suspended_is_not_run_on_resume() -> None:
    effects = Effects()
    script = turns(ToolCall("c1", "restart", {"service": "api"}))
    agent, _, _ = make_agent(script, ask("restart"), effects)
    run = agent.session("ops").start("go")
    (approval,) = (await run.wait()).approvals
    run.suspend()
    checkpoint = (await run.wait()).checkpoint
    assert checkpoint is not None

    denied = checkpoint.with_approval(approval.decide("deny", message="no", by="bob"))
    result = await agent.session("ops").resume(denied, journal=MemoryToolJournal()).wait()

    assert effects.done == []
    assert "denied by bob: no" in result.output


async def test_approval_metrics_count_requests_decisions_and_expiries() -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        value("loom_approvals_requested_total"),
        value("loom_approvals_decided_total", decision="deny"),
        value("loom_approvals_expired_total"),
        value("loom_approval_decision_seconds_count"),
    )
    effects = Effects()
    script = turns(ToolCall("c1", "restart", {"service": "api"}))
    agent, _, _ = make_agent(script, ask("restart"), effects)
    run = agent.session("ops").start("go")
    (approval,) = (await run.wait()).approvals
    run.deny(approval.id)
    await run.wait()
    expiring, _, _ = make_agent(script, ask("restart"), effects, approval_ttl=0.01)
    late = expiring.session("ops").start("go")
    await late.wait()
    await asyncio.sleep(0.05)
    await late.wait()

    after = (
        value("loom_approvals_requested_total"),
        value("loom_approvals_decided_total", decision="deny"),
        value("loom_approvals_expired_total"),
        value("loom_approval_decision_seconds_count"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 1]


async def test_a_later_turn_of_a_resumed_run_is_resumed_not_asked_again() -> None:
    """After a resume, turn 2 calls a tool (a provider gives fresh call ids on every
    answer). The process dies inside that call; the next one resumes from the turn's own
    checkpoint, which the journal keeps: the call is not run twice, nor the model asked."""
    import secrets

    effects = Effects()
    gate = asyncio.Event()
    asked: list[int] = []

    def script(request: ModelRequest) -> ModelResponse | str:
        asked.append(request.iteration)
        if request.iteration == 1:
            return ModelResponse.of_tool_calls(ToolCall("c1", "restart", {"service": "api"}))
        if request.iteration == 2:
            return ModelResponse.of_tool_calls(
                ToolCall(f"toolu_{secrets.token_hex(4)}", "status", {"service": "api"})
            )
        return "done"

    agent, _, status = make_agent(script, ask("restart"), effects)
    original = status.invoke

    async def stuck(arguments: Any, context: Any) -> Any:
        value = await original(arguments, context)
        await gate.wait()  # the process dies here, after the effect
        return value

    status.invoke = stuck  # type: ignore[method-assign]
    run = agent.session("ops").start("go")
    (approval,) = (await run.wait()).approvals
    run.suspend()
    checkpoint = (await run.wait()).checkpoint
    assert checkpoint is not None
    decided = checkpoint.with_approval(approval.decide("approve"))

    journal = MemoryToolJournal()
    first = agent.session("ops").resume(decided, journal=journal)

    async def status_started() -> bool:
        return any(name == "status" for name, _ in effects.done)

    await eventually(status_started, "the status call to start", timeout=10)
    first.cancel("the process died")
    await first.wait()
    latest = journal.latest
    assert latest is not None
    assert (latest.iteration, [c.name for c in latest.calls]) == (2, ["status"])

    gate.set()
    result = (
        await agent.session("ops2")
        .resume(
            RunCheckpoint.from_dict({**latest.to_dict(), "session_id": "ops2"}), journal=journal
        )
        .wait()
    )

    assert [n for n, _ in effects.done] == ["restart", "status"]  # each once
    assert result.status is RunStatus.COMPLETED
    results = [m for m in agent.session("ops2").history if m.role == "tool"]
    assert "outcome unknown" in results[-1].content
    assert asked == [1, 2, 3]  # turn 2 was not asked again


def two_restarts(request: ModelRequest) -> ModelResponse | str:
    if request.iteration == 1:
        return ModelResponse.of_tool_calls(
            ToolCall("c1", "restart", {"service": "api"}),
            ToolCall("c2", "restart", {"service": "db"}),
        )
    return "done"


async def test_suspend_keeps_decisions_taken_in_process() -> None:
    """run.approve(A) then run.suspend(): the checkpoint must carry A's decision."""
    effects = Effects()

    agent, _, _ = make_agent(two_restarts, ask("restart"), effects)
    run = agent.session("ops").start("go")
    a, b = (await run.wait()).approvals
    run.approve(a.id, by="alice")
    assert run.suspend()
    checkpoint = (await run.wait()).checkpoint
    assert checkpoint is not None
    # alice's decision was accepted: the checkpoint must carry it.
    pending = {x.id: x.decided for x in checkpoint.approvals}
    assert pending == {a.id: True, b.id: False}, (
        f"approve() before suspend() was dropped: {pending}"
    )


async def test_session_approve_twice_returns_the_first_decision() -> None:
    """docs/governance.md: the same decision again returns it (also via session.approve)."""
    effects = Effects()

    agent, _, _ = make_agent(two_restarts, ask("restart"), effects)
    session = agent.session("ops")
    run = session.start("go")
    a, _ = (await run.wait()).approvals
    first = session.approve(a.id, by="alice")
    assert session.approve(a.id, by="alice") == first


async def test_an_expired_approval_resumed_is_not_requested_twice() -> None:
    from prometheus_client import REGISTRY

    def requested() -> float:
        return REGISTRY.get_sample_value("loom_approvals_requested_total", {}) or 0.0

    effects = Effects()

    def script(request: ModelRequest) -> ModelResponse | str:
        if request.iteration == 1:
            return ModelResponse.of_tool_calls(ToolCall("c1", "restart", {"service": "api"}))
        return "done"

    before = requested()
    agent, _, _ = make_agent(script, ask("restart"), effects, approval_ttl=0.05)
    run = agent.session("ops").start("go")
    await run.wait()
    run.suspend()
    checkpoint = (await run.wait()).checkpoint
    await asyncio.sleep(0.1)  # expired while suspended; a sweep resumes it
    resumed = agent.session("ops").resume(checkpoint, journal=MemoryToolJournal())
    result = await resumed.wait()
    assert [e.type for e in result.events].count("run.awaiting_approval") == 0
    assert requested() - before == 1, f"requested {requested() - before} times"
