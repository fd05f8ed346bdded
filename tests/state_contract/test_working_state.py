"""Contract tests of ``WorkingState`` (pending and in-flight signals, risks, decisions,
interrupts, the ready set, the attention batch), run on memory and Redis."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from loom.state import State, WorkingState
from loom.state.working import SignalRecord
from tests.state_contract.backends import Backend

# -- pending and in flight ----------------------------------------------------------------


async def test_pending_is_bounded_and_drops_the_oldest(backend: Backend) -> None:
    state = backend.new(max_pending=3)
    lengths = [await state.add_pending("s", f"sig-{i}") for i in range(5)]
    assert lengths == [1, 2, 3, 3, 3]
    assert await state.pending("s") == ["sig-2", "sig-3", "sig-4"]
    assert await state.pending_count("s") == 3
    assert await state.pending_count("other") == 0


async def test_take_pending_moves_signals_in_flight(state: WorkingState) -> None:
    assert await state.take_pending("s") == []
    await state.add_pending("s", "a")
    await state.add_pending("s", "b")
    assert await state.take_pending("s") == ["a", "b"]
    assert await state.pending("s") == []
    assert await state.pending_count("s") == 0
    assert await state.in_flight("s") == ["a", "b"]
    await state.finish_in_flight("s")
    assert await state.in_flight("s") == []
    assert await state.take_pending("s") == []


async def test_take_pending_returns_what_a_crashed_run_left_first(backend: Backend) -> None:
    crashed = backend.new()
    await crashed.add_pending("s", "a")
    assert await crashed.take_pending("s") == ["a"]
    # That worker died without finish_in_flight; another picks the session up.
    survivor = backend.peer(crashed)
    await survivor.add_pending("s", "b")
    assert await survivor.take_pending("s") == ["a", "b"]
    await survivor.finish_in_flight("s")
    assert await survivor.in_flight("s") == []


async def test_carry_over_puts_an_interrupted_runs_signals_back_first(backend: Backend) -> None:
    state = backend.new(max_pending=4)
    for name in "ab":
        await state.add_pending("s", name)
    assert await state.take_pending("s") == ["a", "b"]
    await state.add_pending("s", "interrupter")
    await state.clear_ready("s")
    await state.carry_over("s", ["a'", "b'"], ready=True)
    assert await state.in_flight("s") == []
    assert await state.pending("s") == ["a'", "b'", "interrupter"]
    assert await state.ready_sessions() == ["s"]
    await state.carry_over("t", ["x", "y", "z"], ready=False)
    assert await state.ready_sessions() == ["s"]
    # Past the bound the oldest go, as on add.
    await state.carry_over("s", ["c", "d"], ready=False)
    assert await state.pending("s") == ["d", "a'", "b'", "interrupter"]


async def test_in_flight_is_bounded_too(backend: Backend) -> None:
    state = backend.new(max_pending=3)
    for name in "abc":
        await state.add_pending("s", name)
    await state.take_pending("s")
    for name in "de":
        await state.add_pending("s", name)
    assert await state.take_pending("s") == ["c", "d", "e"]


async def test_take_pending_drops_interrupt_requests(state: WorkingState) -> None:
    await state.add_pending("s", "urgent")
    await state.request_interrupt("s", "sig-urgent", "critical alert")
    assert await state.take_pending("s") == ["urgent"]
    assert await state.wait_interrupt("s", 0.05) is None
    await state.request_interrupt("s", "sig-later", "after the take")
    assert await state.wait_interrupt("s", 1) == ("sig-later", "after the take")


# -- risks and decisions ------------------------------------------------------------------


async def test_risks_add_replace_clear_in_order(state: WorkingState) -> None:
    assert await state.risks("s") == {}
    await state.set_risk("s", "disk", "disk 91% full")
    await state.set_risk("s", "cpu", "cpu hot")
    assert await state.risks("s") == {"disk": "disk 91% full", "cpu": "cpu hot"}
    # A risk reported again counts as the newest.
    await state.set_risk("s", "disk", "disk 97% full")
    risks = await state.risks("s")
    assert list(risks.items()) == [("cpu", "cpu hot"), ("disk", "disk 97% full")]
    await state.clear_risk("s", "cpu")
    await state.clear_risk("s", "never-set")
    assert await state.risks("s") == {"disk": "disk 97% full"}


async def test_risks_are_bounded_oldest_first(backend: Backend) -> None:
    state = backend.new(max_risks=2)
    for key in ["a", "b", "c"]:
        await state.set_risk("s", key, key.upper())
    assert list((await state.risks("s")).items()) == [("b", "B"), ("c", "C")]
    await state.set_risk("s", "b", "B2")
    await state.set_risk("s", "d", "D")
    assert list((await state.risks("s")).items()) == [("b", "B2"), ("d", "D")]


async def test_decisions_are_bounded_newest_last(backend: Backend) -> None:
    state = backend.new(max_decisions=3)
    assert await state.decisions("s") == []
    for i in range(5):
        await state.record_decision("s", json.dumps({"n": i}))
    assert [json.loads(d)["n"] for d in await state.decisions("s")] == [2, 3, 4]
    assert [json.loads(d)["n"] for d in await state.decisions("s", limit=2)] == [3, 4]
    assert await state.decisions("s", limit=0) == []


async def test_every_kept_decision_is_read_by_default(backend: Backend) -> None:
    # GET /sessions/{id} and the console read them this way: all that max_decisions keeps.
    state = backend.new(max_decisions=80)
    for i in range(70):
        await state.record_decision("s", json.dumps({"n": i}))
    assert [json.loads(d)["n"] for d in await state.decisions("s")] == list(range(70))


# -- ready set ----------------------------------------------------------------------------


async def test_ready_set_is_idempotent_and_longest_waiting_first(state: WorkingState) -> None:
    assert await state.ready_sessions() == []
    for session_id in ["b", "a", "b", "c", "a"]:
        await state.mark_ready(session_id)
    assert await state.ready_sessions() == ["b", "a", "c"]
    assert await state.ready_sessions(limit=2) == ["b", "a"]
    await state.clear_ready("b")
    await state.clear_ready("unknown")
    assert await state.ready_sessions() == ["a", "c"]
    await state.mark_ready("b")
    assert await state.ready_sessions() == ["a", "c", "b"]


# -- interrupts ---------------------------------------------------------------------------


async def test_interrupt_requests_are_returned_oldest_first(state: WorkingState) -> None:
    await state.request_interrupt("s", "sig-1", "first")
    await state.request_interrupt("s", "sig-2", "second")
    assert await state.wait_interrupt("s", 1) == ("sig-1", "first")
    assert await state.wait_interrupt("s", 0) == ("sig-2", "second")
    assert await state.wait_interrupt("s", 0) is None


async def test_wait_interrupt_times_out_with_none(state: WorkingState) -> None:
    started = time.monotonic()
    assert await state.wait_interrupt("s", 0.15) is None
    assert time.monotonic() - started >= 0.1


async def test_a_waiter_is_woken_by_a_request_from_another_replica(backend: Backend) -> None:
    worker = backend.new()
    attention = backend.peer(worker)
    waiter = asyncio.create_task(worker.wait_interrupt("s", 10))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await attention.request_interrupt("s", "sig-9", "page the on-call")
    assert await asyncio.wait_for(waiter, 5) == ("sig-9", "page the on-call")


async def test_each_request_wakes_one_of_several_waiters(backend: Backend) -> None:
    first = backend.new()
    waiters = {asyncio.create_task(backend.peer(first).wait_interrupt("s", 5)) for _ in range(3)}
    await asyncio.sleep(0.1)
    await first.request_interrupt("s", "a", "r")
    await first.request_interrupt("s", "b", "r")
    results: list[tuple[str, str] | None] = []
    while len(results) < 2:
        done, waiters = await asyncio.wait(waiters, timeout=3, return_when="FIRST_COMPLETED")
        assert done, "a request woke no waiter"
        results += [task.result() for task in done]
    assert sorted(r[0] for r in results if r is not None) == ["a", "b"]
    assert len(waiters) == 1
    (last,) = waiters
    assert not last.done()
    last.cancel()
    with pytest.raises(asyncio.CancelledError):
        await last


# -- the attention batch ------------------------------------------------------------------


async def test_decision_context_reads_risks_lease_and_pending(state: State) -> None:
    context = await state.decision_context("s")
    assert (context.risks, context.busy, context.pending) == ({}, False, 0)
    await state.set_risk("s", "db", "database is down")
    await state.add_pending("s", "sig-1")
    lease = await state.acquire_lease("s", "worker-a", 5.0)
    assert lease is not None
    context = await state.decision_context("s")
    assert context.risks == {"db": "database is down"}
    assert context.busy is True
    assert context.pending == 1


async def test_record_signal_applies_every_effect(state: WorkingState) -> None:
    await state.record_signal(
        "s",
        decision_json='{"action": "interrupt"}',
        pending_json="sig-9",
        interrupt=("sig-9", "critical"),
        ready=True,
    )
    assert await state.pending("s") == ["sig-9"]
    assert await state.decisions("s") == ['{"action": "interrupt"}']
    assert await state.ready_sessions() == ["s"]
    assert await state.wait_interrupt("s", 0.5) == ("sig-9", "critical")
    await state.record_signal("t", decision_json='{"action": "drop"}')
    assert await state.pending("t") == []
    assert await state.decisions("t") == ['{"action": "drop"}']
    assert await state.ready_sessions() == ["s"]


async def test_batched_reads_and_writes_match_the_single_ones(state: State) -> None:
    await state.add_pending("a", "sig-0")
    contexts = await state.decision_contexts(["a", "b", "a"])
    assert sorted(contexts) == ["a", "b"]
    assert (contexts["a"].pending, contexts["b"].pending) == (1, 0)
    await state.record_signals(
        [
            SignalRecord("a", '{"n": 1}', pending_json="sig-1", ready=True),
            SignalRecord("b", '{"n": 2}', pending_json="sig-2", interrupt=("sig-2", "now")),
            SignalRecord("a", '{"n": 3}'),
        ]
    )
    assert await state.pending("a") == ["sig-0", "sig-1"]
    assert await state.decisions("a") == ['{"n": 1}', '{"n": 3}']
    assert await state.ready_sessions() == ["a"]
    assert await state.wait_interrupt("b", 0.5) == ("sig-2", "now")


async def test_batched_records_keep_every_text_exactly(state: WorkingState) -> None:
    """The Redis batch travels as one JSON argument: quotes, escapes, non-ASCII and
    astral characters, and session ids with braces and colons come back byte for byte."""
    odd_session = 'thread:{C1}:"1700000000.0001" ✓'
    text = 'disk "full" \\ on host-ü 🚀 \n\t end'
    pending = json.dumps({"summary": text}, ensure_ascii=False)
    decision = json.dumps({"reason": text})
    await state.record_signals(
        [
            SignalRecord(odd_session, decision, pending_json=pending, ready=True),
            SignalRecord(odd_session, decision, interrupt=("sig-ü", text)),
        ]
    )
    assert await state.pending(odd_session) == [pending]
    assert await state.decisions(odd_session) == [decision, decision]
    assert await state.ready_sessions() == [odd_session]
    assert await state.wait_interrupt(odd_session, 0.5) == ("sig-ü", text)


# -- runs put off (issue 19) --------------------------------------------------------------


async def test_a_put_off_run_is_due_once_and_survives_its_process(backend: Backend) -> None:
    waiting = backend.new()
    await waiting.schedule("s", 0.2, 5.0)
    assert await waiting.scheduled("s")
    assert await waiting.promote_due() == []
    assert await waiting.ready_sessions() == []
    # The process that put the run off is gone; another replica's sweep starts it.
    survivor = backend.peer(waiting)
    await asyncio.sleep(0.3)
    assert await survivor.promote_due() == ["s"]
    assert await survivor.promote_due() == []  # once
    assert await survivor.ready_sessions() == ["s"]
    assert not await survivor.scheduled("s")


async def test_a_put_off_run_waits_no_longer_than_its_max_wait(state: WorkingState) -> None:
    await state.schedule("s", 30.0, 0.2)
    await state.schedule("s", 30.0, 0.2)  # each signal pushes back, up to the max wait
    await asyncio.sleep(0.3)
    assert await state.promote_due() == ["s"]


async def test_unschedule_forgets_a_put_off_run(state: WorkingState) -> None:
    await state.schedule("s", 30.0, 30.0)
    await state.unschedule("s")
    assert not await state.scheduled("s")
    await state.schedule("s", 0.0, 30.0)
    assert await state.promote_due() == ["s"]


async def test_run_times_are_seconds_ago_on_the_states_clock(state: WorkingState) -> None:
    assert await state.run_times("s") == (None, None)
    await state.note_run("s", ended=False)
    started, ended = await state.run_times("s")
    assert started is not None
    assert started >= 0
    assert ended is None
    await state.note_run("s", ended=True)
    started, ended = await state.run_times("s")
    assert started is not None
    assert ended is not None
    assert ended <= started
    assert (await state.decision_context("s")).last_run_started_ago is not None
