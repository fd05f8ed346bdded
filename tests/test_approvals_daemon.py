"""Durable approvals in the daemon, in one process (memory broker and state): a paused run
is suspended without a slot or a lease, decided over HTTP, resumed with the same run id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from loom import Agent, Model, ModelRequest, ModelResponse, RuntimeSignal, ToolCall, tool
from loom.broker.memory import MemoryBroker
from loom.daemon.app import Daemon
from loom.daemon.attention import pending_json
from loom.daemon.http import build_app
from loom.daemon.settings import ApprovalSettings, Settings
from loom.daemon.worker import SessionWorker
from loom.state.base import StateUnavailable
from loom.state.memory_state import MemoryState
from loom.wire import TOPOLOGY, publish_signal
from tests.polling import eventually
from tests.test_daemon_memory import drain

ran: list[str] = []


@tool(requires_approval=True)
def restart(service: str) -> str:
    """Restart a service."""
    ran.append(service)
    return f"{service} restarted"


def script(request: ModelRequest) -> ModelResponse | str:
    """Restart what the user names; then report the tool results."""
    results = [m for m in request.messages if m.role == "tool"]
    if request.messages[-1].role == "user":
        service = request.messages[-1].content.rsplit(" ", 1)[-1]
        return ModelResponse.of_tool_calls(
            ToolCall(f"c-{service}", "restart", {"service": service})
        )
    return "; ".join(m.content for m in results[-1:])


def make_daemon(**overrides: Any) -> Daemon:
    ran.clear()
    approvals = {"hold": 0.0, **overrides.pop("approvals", {})}
    credentials = {"api_token": "tok", **overrides}
    settings = Settings(
        broker_url="memory://",
        state_url="memory://",
        worker={"lease_ttl": 2.0, "sweep_interval": 0.05},
        approvals=approvals,
        **credentials,
    )
    return Daemon(Agent(Model.function(script), tools=[restart]), settings=settings)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    daemon = make_daemon()
    await daemon.start()
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://loom", headers={"authorization": "Bearer tok"}
    ) as client:
        yield daemon, client
    await daemon.stop()


async def ask(daemon: Daemon, text: str, session: str = "ops", **fields: Any) -> RuntimeSignal:
    signal = RuntimeSignal.create(text, session_id=session, **fields)
    await publish_signal(daemon.broker, signal)
    await drain(daemon)
    return signal


async def pending_approval(client: httpx.AsyncClient, session: str = "ops") -> dict[str, Any]:
    view = (await client.get(f"/sessions/{session}")).json()
    (approval,) = view["approvals"]
    assert view["awaiting_run"] == approval["run_id"]
    return dict(approval)


async def test_a_suspended_run_holds_nothing_and_resumes_on_an_http_decision(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = served
    signal = await ask(daemon, "please restart api")

    approval = await pending_approval(client)
    assert (approval["tool"], approval["arguments"]) == ("restart", {"service": "api"})
    assert ran == []
    assert daemon.worker.active_sessions == []
    assert await daemon.state.lease_holder("ops") is None  # no lease held while waiting
    in_flight = [json.loads(t)["signal"]["id"] for t in await daemon.state.in_flight("ops")]
    assert in_flight == [signal.id]  # the signal stays accepted and unanswered

    answer = await client.post(
        f"/sessions/ops/approvals/{approval['id']}",
        json={"decision": "approve", "digest": approval["digest"], "by": "alice"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["approval"]["decision"] == "approve"
    await drain(daemon)

    assert ran == ["api"]
    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    (record,) = snapshot.runs
    assert (record.run_id, record.status) == (approval["run_id"], "completed")
    assert record.output == "api restarted"
    assert await daemon.state.in_flight("ops") == []
    assert await daemon.state.suspensions.load("ops") is None
    view = (await client.get("/sessions/ops")).json()
    assert (view["approvals"], view["awaiting_run"]) == ([], None)
    roles = [m.role for m in snapshot.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]


async def test_bad_decisions_get_clear_answers(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = served
    await ask(daemon, "please restart api")
    approval = await pending_approval(client)
    url = f"/sessions/ops/approvals/{approval['id']}"

    unknown = await client.post("/sessions/ops/approvals/apr_nope", json={"decision": "approve"})
    assert unknown.status_code == 404
    elsewhere = await client.post(
        f"/sessions/nobody/approvals/{approval['id']}", json={"decision": "approve"}
    )
    assert elsewhere.status_code == 404
    digest = await client.post(url, json={"decision": "approve", "digest": "sha256:0"})
    assert digest.status_code == 409
    assert "digest" in digest.json()["error"]
    malformed = await client.post(url, json={"decision": "maybe"})
    assert malformed.status_code == 422
    assert "decision" in malformed.json()["error"]
    extra = await client.post(url, json={"decision": "deny", "because": "x"})
    assert extra.status_code == 422
    assert "because" in extra.json()["error"]
    unauthenticated = await client.post(
        url, json={"decision": "deny"}, headers={"authorization": "Bearer wrong"}
    )
    assert unauthenticated.status_code == 401

    first = await client.post(url, json={"decision": "deny", "message": "no", "by": "bob"})
    assert first.status_code == 200
    same = await client.post(url, json={"decision": "deny", "by": "carol"})
    assert same.status_code == 200  # the same decision again: harmless, the first kept
    assert same.json()["approval"]["decided_by"] == "api:bob"
    assert (first.json()["fresh"], same.json()["fresh"]) == (True, False)
    other = await client.post(url, json={"decision": "approve"})
    assert other.status_code == 409
    assert "already decided: deny by api:bob" in other.json()["error"]
    await drain(daemon)
    assert ran == []


async def test_an_expired_approval_is_gone_and_its_call_denied() -> None:
    daemon = make_daemon(approvals={"ttl": 0.2})
    await daemon.start()
    try:
        await ask(daemon, "please restart api")
        checkpoint = await daemon.state.suspensions.load("ops")
        assert checkpoint is not None
        (approval,) = checkpoint.pending
        await asyncio.sleep(0.3)
        transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
            late = await client.post(
                f"/sessions/ops/approvals/{approval.id}",
                json={"decision": "approve"},
                headers={"authorization": "Bearer tok"},
            )
        assert late.status_code == 410

        async def resumed() -> bool:  # by the worker's sweep, the call denied as expired
            return await daemon.state.suspensions.load("ops") is None

        await eventually(resumed, "the expired run to resume", timeout=10)
        await drain(daemon)
        snapshot = await daemon.state.sessions.load("ops")
        assert snapshot is not None
        (record,) = snapshot.runs
        assert record.status == "completed"
        assert "approval expired" in record.output
        assert ran == []
    finally:
        await daemon.stop()


async def test_a_decision_within_the_hold_goes_on_without_suspending() -> None:
    daemon = make_daemon(approvals={"hold": 30.0})
    await daemon.start()
    try:
        await publish_signal(daemon.broker, RuntimeSignal.create("restart api", session_id="ops"))
        checkpoint = await eventually(
            lambda: daemon.state.suspensions.load("ops"), "the run to pause", timeout=10
        )
        assert daemon.worker.active_sessions == ["ops"]  # held, not suspended
        await daemon.approvals.decide("ops", checkpoint.pending[0].id, "approve", by="alice")
        await drain(daemon)
        assert ran == ["api"]
        snapshot = await daemon.state.sessions.load("ops")
        assert snapshot is not None
        assert [r.run_id for r in snapshot.runs] == [checkpoint.run_id]
        assert await daemon.state.suspensions.load("ops") is None
    finally:
        await daemon.stop()


async def test_signals_for_a_suspended_session_wait_and_an_interrupt_ends_it(
    served: tuple[Daemon, httpx.AsyncClient],
) -> None:
    daemon, client = served
    await ask(daemon, "please restart api")
    approval = await pending_approval(client)

    await ask(daemon, "also restart web")  # queued: waits behind the suspended run
    assert await daemon.state.suspensions.load("ops") is not None
    assert len(await daemon.state.pending("ops")) == 1
    assert ran == []

    await ask(daemon, "page: restart db", urgency="critical")  # interrupts it
    await drain(daemon)

    snapshot = await daemon.state.sessions.load("ops")
    assert snapshot is not None
    statuses = [(r.run_id == approval["run_id"], r.status) for r in snapshot.runs]
    assert statuses[0] == (True, "interrupted")
    tool_results = [m for m in snapshot.messages if m.role == "tool"]
    assert tool_results[0].tool_call_id == "c-api"
    assert tool_results[0].is_error  # the waiting call was closed, not left dangling
    assert ran == []  # the next run asks again (restart needs approval)
    assert await daemon.state.pending("ops") == []


async def test_a_thousand_suspended_sessions_hold_no_slot_and_no_lease() -> None:
    daemon = make_daemon()
    await daemon.start()
    try:
        for index in range(1000):
            signal = RuntimeSignal.create(f"restart s{index}", session_id=f"s{index}")
            await publish_signal(daemon.broker, signal)
        await drain(daemon, timeout=60)
        assert await daemon.state.suspensions.count() == 1000
        assert daemon.worker.active_sessions == []
        assert await daemon.state.held_leases(limit=2000) == []
        assert ran == []
    finally:
        await daemon.stop()


async def test_a_signed_decision_must_name_its_call_by_digest() -> None:
    from loom.intake.signing import sign

    daemon = make_daemon(api_token=None, webhook_secret="shh")
    await daemon.start()
    try:
        await ask(daemon, "please restart api")
        checkpoint = await daemon.state.suspensions.load("ops")
        assert checkpoint is not None
        (approval,) = checkpoint.pending
        transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
        url = f"/sessions/ops/approvals/{approval.id}"
        async with httpx.AsyncClient(transport=transport, base_url="http://loom") as client:
            bare = json.dumps({"decision": "approve"}).encode()
            refused = await client.post(url, content=bare, headers=sign("shh", bare))
            named = json.dumps({"decision": "approve", "digest": approval.digest}).encode()
            taken = await client.post(url, content=named, headers=sign("shh", named))
        assert refused.status_code == 422
        assert "digest" in refused.json()["error"]
        assert taken.status_code == 200, taken.text
    finally:
        await daemon.stop()


# Found by review: failures around the run's end and its checkpoint.


async def test_a_run_whose_checkpoint_could_not_be_saved_is_not_left_running() -> None:
    daemon = make_daemon()
    await daemon.start()
    try:
        suspensions = daemon.state.suspensions
        real_save = suspensions.save
        calls = 0

        async def flaky_save(checkpoint: Any, token: int) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise StateUnavailable("redis blip")
            await real_save(checkpoint, token)

        suspensions.save = flaky_save  # type: ignore[method-assign]
        await ask(daemon, "please restart api")
        await asyncio.sleep(0.3)
        await drain(daemon)
        orphans = [
            t
            for t in asyncio.all_tasks()
            if not t.done() and "Session._execute" in repr(t.get_coro())
        ]
        assert orphans == [], f"{len(orphans)} run task(s) left paused in the worker"
    finally:
        await daemon.stop()


async def test_a_failure_after_discard_does_not_run_the_signals_again() -> None:
    """The resumed run completed and was answered; finish_in_flight then fails (a crash
    there is the same). The checkpoint is already gone, so the signals run again from
    scratch: a second approval request for a restart that already happened."""
    daemon = make_daemon()
    await daemon.start()
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://loom", headers={"authorization": "Bearer tok"}
        ) as client:
            await ask(daemon, "please restart api")
            approval = await pending_approval(client)
            real = daemon.state.finish_in_flight
            failed = False

            async def crash_once(session_id: str) -> None:
                nonlocal failed
                if not failed:
                    failed = True
                    raise StateUnavailable("worker died here")
                await real(session_id)

            daemon.state.finish_in_flight = crash_once  # type: ignore[method-assign]
            answer = await client.post(
                f"/sessions/ops/approvals/{approval['id']}", json={"decision": "approve"}
            )
            assert answer.status_code == 200
            await drain(daemon)
            await asyncio.sleep(0.3)
            await drain(daemon)
            assert ran == ["api"]
            view = (await client.get("/sessions/ops")).json()
            assert view["approvals"] == [], f"the same signal asks again: {view['approvals']}"
    finally:
        await daemon.stop()


async def test_a_late_press_on_an_earlier_turns_approval_is_not_unknown() -> None:
    """Turn 1 asks for approval A (approved); turn 2 asks for B, and its checkpoint
    replaces turn 1's. Pressing A again (a second Slack press, a retried POST) is then
    answered 404 unknown, not with the first decision (200/409) -- and after the run ends,
    A is never remembered at all."""

    def two_turns(request: ModelRequest) -> ModelResponse | str:
        tools = [m for m in request.messages if m.role == "tool"]
        if request.messages[-1].role == "user":
            return ModelResponse.of_tool_calls(ToolCall("c1", "restart", {"service": "api"}))
        if len(tools) == 1:
            return ModelResponse.of_tool_calls(ToolCall("c2", "restart", {"service": "db"}))
        return "done"

    settings = Settings(
        broker_url="memory://",
        state_url="memory://",
        api_token="tok",
        worker={"lease_ttl": 2.0, "sweep_interval": 0.05},
        approvals={"hold": 0.0},
    )
    daemon = Daemon(Agent(Model.function(two_turns), tools=[restart]), settings=settings)
    await daemon.start()
    transport = httpx.ASGITransport(app=build_app(daemon, gateway=True))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://loom", headers={"authorization": "Bearer tok"}
        ) as client:
            await ask(daemon, "please restart api")
            (first,) = (await client.get("/sessions/ops")).json()["approvals"]
            url = f"/sessions/ops/approvals/{first['id']}"
            assert (await client.post(url, json={"decision": "approve"})).status_code == 200
            await drain(daemon)
            (second,) = (await client.get("/sessions/ops")).json()["approvals"]
            assert second["id"] != first["id"]
            again = await client.post(url, json={"decision": "approve"})
            assert again.status_code in (200, 409), (again.status_code, again.text)
    finally:
        await daemon.stop()


class PageDuringTheSuspension(MemoryState):
    """A critical page recorded just as the worker lets go of a run it suspends: the lease
    is still held, so no work notice goes out for it (the holder is left to find it)."""

    def __init__(self) -> None:
        super().__init__()
        self.page: RuntimeSignal | None = None

    async def clear_ready(self, session_id: str) -> None:
        await super().clear_ready(session_id)
        if self.page is None and await self.suspensions.load(session_id) is not None:
            self.page = RuntimeSignal.create(
                "page: db down", urgency="critical", session_id=session_id
            )
            await self.add_pending(session_id, pending_json(self.page, "interrupt"))
            await self.mark_ready(session_id)


async def test_a_page_recorded_while_the_run_is_suspended_ends_it_without_a_sweep() -> None:
    """Before: the worker let go of the session looking only for decisions, so the page
    waited for the approval to be decided or to expire (no notice, and no sweep looks at
    a suspended session's signals)."""
    ran.clear()
    state = PageDuringTheSuspension()
    broker = MemoryBroker(topology=TOPOLOGY)
    await broker.start()
    agent = Agent(Model.function(script), tools=[restart])
    worker = SessionWorker(
        agent, broker, state, sweep_interval=3600, approvals=ApprovalSettings(hold=0.0)
    )
    first = RuntimeSignal.create("please restart api", session_id="ops")
    await state.add_pending("ops", pending_json(first, "queue"))
    await state.mark_ready("ops")
    await worker.start()
    try:
        await worker.try_run("ops")
        await eventually(lambda: _interrupted(state, "ops"), "the suspended run to end", timeout=10)
    finally:
        await worker.stop(timeout=1)
        await broker.close()
    assert state.page is not None
    assert ran == []  # the page's own run asks again (restart needs approval)


async def _interrupted(state: MemoryState, session_id: str) -> bool:
    snapshot = await state.sessions.load(session_id)
    return bool(snapshot and snapshot.runs) and snapshot.runs[0].status == "interrupted"
