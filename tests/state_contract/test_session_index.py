"""Contract tests of ``SessionIndex`` (sessions by last activity, the console's paging), run
on memory and Redis."""

from __future__ import annotations

import json

from loom.core.session_store import RunRecord
from loom.state import State
from loom.state.endings import RunEnding
from loom.state.working import SignalRecord
from tests.state_contract.backends import Backend


async def _decide(state: State, session_id: str, note: str = "d") -> None:
    decision = json.dumps({"action": "observe", "note": note})
    await state.record_signals([SignalRecord(session_id, decision)])


async def _finish(state: State, session_id: str, run_id: str, status: str = "completed") -> None:
    lease = await state.acquire_lease(session_id, "w1", 5.0)
    assert lease is not None
    run = RunRecord(run_id=run_id, session_id=session_id, status=status, output="done")
    assert await state.finish_run(lease.token, RunEnding(session_id, run))
    await state.release_lease(lease)


async def test_decisions_and_run_endings_order_sessions_newest_first(backend: Backend) -> None:
    state = backend.new()
    assert await state.recent_sessions(0, 10) == []
    assert await state.count_sessions() == 0
    for sid in ("a", "b", "c"):
        await _decide(state, sid)
    await _finish(state, "a", "run-a")  # a run ending is activity too
    await state.record_decision("b", json.dumps({"action": "drop"}))  # and a lone decision
    peer = backend.peer(state)
    rows = await peer.recent_sessions(0, 10)
    assert [sid for sid, _ in rows] == ["b", "a", "c"]
    assert all(rows[i][1] >= rows[i + 1][1] for i in range(len(rows) - 1))
    assert await peer.count_sessions() == 3
    assert await peer.recent_sessions(1, 1) == rows[1:2]
    assert await peer.recent_sessions(3, 10) == []  # past the end: empty
    assert await peer.activity_ranks(["c", "nobody", "b"]) == {"c": 2, "b": 0}


async def test_a_page_filters_by_a_small_set_and_pages_around_it(backend: Backend) -> None:
    state = backend.new()
    ids = [f"s{i:02d}" for i in range(30)]
    for sid in ids:
        await _decide(state, sid)
    newest_first = [sid for sid, _ in await state.recent_sessions(0, 100)]
    assert sorted(newest_first) == ids
    excluded = {newest_first[0], newest_first[3], newest_first[4], newest_first[17], "ghost"}
    rest = [sid for sid in newest_first if sid not in excluded]
    for offset in range(0, 30, 4):
        page = await state.sessions_page(offset, 4, exclude=excluded)
        assert page.session_ids == rest[offset : offset + 4], offset
        assert page.total == len(rest)
    only = {newest_first[5], newest_first[2], "not-yet-indexed"}
    page = await state.sessions_page(0, 10, only=only)
    assert page.session_ids == ["not-yet-indexed", newest_first[2], newest_first[5]]
    assert page.total == 3
    assert (await state.sessions_page(1, 1, only=only)).session_ids == [newest_first[2]]
    assert (await state.sessions_page(100, 10)).session_ids == []
    assert (await state.sessions_page(100, 10, exclude=excluded)).session_ids == []
    assert (await state.sessions_page(0, 50)).session_ids == newest_first


async def test_summaries_name_the_newest_decision_and_run(backend: Backend) -> None:
    state = backend.new()
    await _decide(state, "s", "first")
    await _decide(state, "s", "second")
    await _finish(state, "s", "run-1", "failed")
    await _finish(state, "s", "run-2")
    await _decide(state, "quiet", "only")
    rows = await backend.peer(state).session_summaries(["s", "quiet", "unknown"])
    assert [row.session_id for row in rows] == ["s", "quiet", "unknown"]
    s, quiet, unknown = rows
    assert s.last_decision is not None
    assert json.loads(s.last_decision)["note"] == "second"
    assert s.last_run is not None
    assert json.loads(s.last_run)["run_id"] == "run-2"
    assert s.last_active is not None
    assert quiet.last_active is not None
    assert quiet.last_run is None
    assert unknown == type(unknown)("unknown", None, None, None)
