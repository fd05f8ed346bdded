"""Contract tests for the session store port, run against every store, plus file-store tests."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loom.core.messages import Message, ToolCall
from loom.core.session_store import history_start
from loom.state import (
    FileSessionStore,
    InMemorySessionStore,
    RunRecord,
    SessionStore,
    trim_history,
)
from loom.state.redis_sessions import RedisSessionStore
from tests.services import delete_redis_keys, require_redis

START = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
StoreFactory = Callable[..., SessionStore]


def turn(i: int, *, error: bool = False) -> list[Message]:
    """One complete turn: question, tool call, tool result, answer."""
    call = ToolCall(id=f"call-{i:06d}", name="lookup", arguments={"q": i, "nested": [1, {"a": 2}]})
    return [
        Message.user(f"question {i:06d}"),
        Message.assistant("", (call,)),
        Message.tool_result(call, f"result {i:06d}", is_error=error),
        Message.assistant(f"answer {i:06d}"),
    ]


def run(i: int, session_id: str = "s", status: str = "completed", **extra: Any) -> RunRecord:
    return RunRecord(
        run_id=f"run-{i:06d}",
        session_id=session_id,
        status=status,
        started_at=START + timedelta(seconds=i),
        **extra,
    )


@pytest.fixture(params=["memory", "file", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    stores: list[SessionStore] = []
    if request.param == "redis":
        redis_url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"

    def factory(*, max_messages: int = 2000, max_runs: int = 200) -> SessionStore:
        store: SessionStore
        if request.param == "memory":
            store = InMemorySessionStore(max_messages=max_messages, max_runs=max_runs)
        elif request.param == "file":
            path = tmp_path / f"sessions-{len(stores)}.jsonl"
            store = FileSessionStore(path, max_messages=max_messages, max_runs=max_runs)
        else:
            # A prefix of its own per store, as the file store gets a file of its own.
            store = RedisSessionStore(
                redis_url,
                prefix=f"{prefix}:{len(stores)}",
                max_messages=max_messages,
                max_runs=max_runs,
            )
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()
    if request.param == "redis":
        await delete_redis_keys(redis_url, prefix)


async def test_roundtrip_messages_with_tool_calls_and_errors(make_store: StoreFactory) -> None:
    store = make_store()
    first, second = turn(1), turn(2, error=True)
    await store.append("s", messages=first)
    await store.append("s", messages=second)
    bad_args = ToolCall(id="c", name="lookup", raw_arguments="{not json")
    await store.append("s", messages=[Message.assistant("", (bad_args,))])
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.session_id == "s"
    assert snapshot.messages == [*first, *second, Message.assistant("", (bad_args,))]
    assert snapshot.messages[6].is_error
    assert snapshot.messages[5].tool_calls[0].arguments == {"q": 2, "nested": [1, {"a": 2}]}
    assert snapshot.created_at.tzinfo is not None
    assert snapshot.created_at <= snapshot.updated_at


async def test_run_is_upserted_by_run_id(make_store: StoreFactory) -> None:
    store = make_store()
    await store.append("s", run=run(1, status="running"))
    await store.append("s", run=run(2, status="running"))
    done = run(
        1,
        output="done",
        usage={"input_tokens": 10, "output_tokens": 3},
        finished_at=START + timedelta(minutes=1),
        metadata={"signals": ["sig-1"]},
    )
    await store.append("s", run=done)
    await store.append("s", run=run(2, status="failed", error="provider error"))
    snapshot = await store.load("s")
    assert snapshot is not None
    assert [r.run_id for r in snapshot.runs] == ["run-000001", "run-000002"]
    assert snapshot.runs[0] == done
    assert snapshot.runs[1].status == "failed"
    assert snapshot.runs[1].error == "provider error"


async def test_load_history_has_the_transcript_and_metadata(make_store: StoreFactory) -> None:
    store = make_store()
    await store.append("s", messages=turn(1), run=run(1), metadata={"team": "ops"})
    full = await store.load("s")
    history = await store.load_history("s")
    assert full is not None
    assert history is not None
    assert history.messages == full.messages == turn(1)
    assert history.metadata == {"team": "ops"}
    assert await store.load_history("unknown") is None


async def test_metadata_is_merged(make_store: StoreFactory) -> None:
    store = make_store()
    await store.append("s", metadata={"channel": "C1", "thread": "t1"})
    await store.append("s", metadata={"thread": "t2", "risk": {"level": "high"}})
    await store.append("s", messages=[Message.user("hi")])
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.metadata == {"channel": "C1", "thread": "t2", "risk": {"level": "high"}}


async def test_message_window_is_bounded_and_starts_at_a_user_message(
    make_store: StoreFactory,
) -> None:
    store = make_store(max_messages=6)
    for i in range(5):
        await store.append("s", messages=turn(i))
    snapshot = await store.load("s")
    assert snapshot is not None
    # The last 6 messages begin mid-turn; the window moves forward to the last question.
    assert snapshot.messages == turn(4)
    await store.append("s", messages=[Message.user("next")])
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages == [*turn(4), Message.user("next")]


async def test_a_turn_longer_than_the_window_never_leaves_orphans(
    make_store: StoreFactory,
) -> None:
    store = make_store(max_messages=3)
    await store.append("s", messages=turn(1))
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages == []
    # The rest of that turn arrives later: its tool result has no call in the window.
    call = ToolCall(id="late", name="lookup")
    await store.append("s", messages=[Message.tool_result(call, "late result")])
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages == []
    await store.append("s", messages=[Message.user("again")])
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages == [Message.user("again")]


async def test_runs_are_bounded_to_the_most_recent(make_store: StoreFactory) -> None:
    store = make_store(max_runs=3)
    for i in range(6):
        await store.append("s", run=run(i))
    await store.append("s", run=run(4, status="cancelled"))
    snapshot = await store.load("s")
    assert snapshot is not None
    assert [r.run_id for r in snapshot.runs] == ["run-000003", "run-000004", "run-000005"]
    assert snapshot.runs[1].status == "cancelled"


async def test_every_runs_output_reads_back_whether_the_transcript_holds_it_or_not(
    make_store: StoreFactory,
) -> None:
    """An output that is the run's last reply (Redis stores it once, in the transcript, while
    the transcript holds it), one that is not, one whose reply the bound dropped, and
    records upserted with and without messages all read back as stored."""
    store = make_store(max_messages=6, max_runs=5)
    outputs: dict[str, str] = {}
    for i in range(9):
        # Every third run's output is not its last reply.
        output = f"summary {i}" if i % 3 == 2 else f"answer {i:06d}"
        await store.append("s", messages=turn(i), run=run(i, output=output))
        outputs[f"run-{i:06d}"] = output
    # Upserts: the newest without messages, an older one with a reply of its own.
    await store.append("s", run=run(8, output="rewritten"))
    outputs["run-000008"] = "rewritten"
    await store.append("s", messages=[Message.assistant("late")], run=run(6, output="late"))
    outputs["run-000006"] = "late"
    snapshot = await store.load("s")
    assert snapshot is not None
    assert {record.run_id: record.output for record in snapshot.runs} == {
        f"run-{i:06d}": outputs[f"run-{i:06d}"] for i in range(4, 9)
    }
    for i in range(9, 12):  # the bound drops every reply the transcript held
        await store.append("s", messages=turn(i), run=run(i, output=f"answer {i:06d}"))
        outputs[f"run-{i:06d}"] = f"answer {i:06d}"
    snapshot = await store.load("s")
    assert snapshot is not None
    got = {record.run_id: record.output for record in snapshot.runs}
    assert got == {run_id: outputs[run_id] for run_id in got}
    assert sorted(got) == ["run-000007", "run-000008", "run-000009", "run-000010", "run-000011"]


async def test_redis_keeps_every_output_the_memory_store_keeps() -> None:
    """Random appends (replies of any length, runs with and without messages, upserts,
    outputs that are and are not the last reply, run ids packed and not) under small
    bounds: Redis, which stores an output once while its transcript holds it, reads back
    what the memory store does."""
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    rng = random.Random(20)
    redis_store = RedisSessionStore(url, prefix=prefix, max_messages=7, max_runs=6)
    memory_store = InMemorySessionStore(max_messages=7, max_runs=6)
    try:
        for step in range(300):
            run_id = rng.randrange(step + 1)  # often a new run, sometimes an upsert
            messages = [Message.user(f"q{step}")] * rng.randrange(3)
            if rng.random() < 0.8:
                messages.append(Message.assistant(f"reply {step}"))
            output = f"reply {step}" if rng.random() < 0.7 else f"other {step}"
            record = run(run_id, output=output)
            if run_id % 2:  # a Loom run id, which Redis stores packed
                record.run_id = f"run_{run_id:032x}"
            for store in (redis_store, memory_store):
                await store.append("s", messages=messages, run=record)
            if step % 25 == 0 or step == 299:
                from_redis, from_memory = await redis_store.load("s"), await memory_store.load("s")
                assert from_redis is not None
                assert from_memory is not None
                assert from_redis.runs == from_memory.runs
    finally:
        await redis_store.close()
        await delete_redis_keys(url, prefix)


async def test_unknown_session_loads_as_none(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.load("nope") is None
    assert await store.list_sessions() == []


async def test_delete(make_store: StoreFactory) -> None:
    store = make_store()
    await store.append("a", messages=turn(1), run=run(1, "a"), metadata={"k": 1})
    await store.append("b", messages=turn(2))
    await store.delete("a")
    await store.delete("never-existed")
    assert await store.load("a") is None
    assert await store.list_sessions() == ["b"]
    await store.append("a", messages=[Message.user("fresh")])
    snapshot = await store.load("a")
    assert snapshot is not None
    assert snapshot.messages == [Message.user("fresh")]
    assert snapshot.runs == []
    assert snapshot.metadata == {}


async def test_list_sessions_in_creation_order(make_store: StoreFactory) -> None:
    store = make_store()
    for session_id in ["c", "a", "b", "a"]:
        await store.append(session_id, messages=[Message.user(session_id)])
    assert await store.list_sessions() == ["c", "a", "b"]


async def test_a_runs_cost_is_kept_to_the_cent_fraction(make_store: StoreFactory) -> None:
    """Usage holds counts and one amount, ``cost_usd``: stored and read back, the amount
    is not cut to a whole number of dollars."""
    store = make_store()
    usage = {"input_tokens": 1200, "requests": 2, "cost_usd": 0.01234567}
    await store.append("s", messages=turn(1), run=run(1, usage=usage))
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.runs[0].usage == usage
    assert RunRecord.from_dict(snapshot.runs[0].to_dict()).usage == usage


async def test_snapshots_and_inputs_are_copies(make_store: StoreFactory) -> None:
    store = make_store()
    record = run(1, metadata={"tags": ["x"]}, usage={"input_tokens": 1})
    metadata: dict[str, Any] = {"nested": {"n": 1}}
    await store.append("s", messages=turn(1), run=record, metadata=metadata)
    record.status = "mutated"
    record.metadata["tags"].append("y")
    metadata["nested"]["n"] = 2
    snapshot = await store.load("s")
    assert snapshot is not None
    snapshot.messages.clear()
    snapshot.runs[0].usage["input_tokens"] = 99
    snapshot.runs[0].metadata["tags"].append("z")
    snapshot.runs.clear()
    snapshot.metadata["nested"]["n"] = 3
    again = await store.load("s")
    assert again is not None
    assert again.messages == turn(1)
    assert again.runs == [run(1, metadata={"tags": ["x"]}, usage={"input_tokens": 1})]
    assert again.metadata == {"nested": {"n": 1}}


async def test_sessions_never_see_each_other(make_store: StoreFactory) -> None:
    store = make_store(max_messages=8, max_runs=2)
    for i in range(10):
        await store.append("alice", messages=turn(i), run=run(i, "alice"), metadata={"who": "a"})
        await store.append("bob", messages=[Message.user(f"bob {i}")], metadata={"only": "bob"})
    alice, bob = await store.load("alice"), await store.load("bob")
    assert alice is not None
    assert bob is not None
    assert all("bob" not in m.content for m in alice.messages)
    assert bob.messages == [Message.user(f"bob {i}") for i in range(2, 10)]
    assert bob.runs == []
    assert alice.metadata == {"who": "a"}
    assert bob.metadata == {"only": "bob"}


async def test_updated_at_advances(make_store: StoreFactory) -> None:
    store = make_store()
    await store.append("s", messages=[Message.user("one")])
    first = await store.load("s")
    await asyncio.sleep(0.002)
    await store.append("s", messages=[Message.user("two")])
    second = await store.load("s")
    assert first is not None
    assert second is not None
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert second.updated_at.utcoffset() == timedelta(0)


def test_trim_history() -> None:
    history = [*turn(1), *turn(2)]
    assert trim_history(history, 100) == history
    assert trim_history(history, 5) == turn(2)
    assert trim_history(history, 4) == turn(2)
    assert trim_history(history, 3) == []
    assert trim_history(history, 0) == []
    assert trim_history(history[1:], 100, cut=True) == turn(2)
    tail = [Message.assistant("proactive"), Message.user("q")]
    assert trim_history(tail, 2) == tail
    assert history_start(history, 5) == 4
    assert history_start(history, 3) == len(history)
    assert history_start(history, 100) == 0


def test_run_record_dict_roundtrip() -> None:
    record = run(7, output="o", error="e", usage={"requests": 2}, metadata={"m": [1]})
    record.finished_at = START + timedelta(hours=1)
    data = record.to_dict()
    assert data["started_at"] == "2025-01-02T03:04:12.678901+00:00"
    assert json.loads(json.dumps(data)) == data
    assert RunRecord.from_dict(data) == record
    local = datetime(2025, 1, 2, 5, 4, 5, tzinfo=UTC).astimezone()
    assert RunRecord("r", "s", "ok", started_at=local).started_at.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone"):
        RunRecord("r", "s", "ok", started_at=datetime(2025, 1, 1))


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InMemorySessionStore(max_messages=0)


# -- file store ------------------------------------------------------------------------------


def size(path: Path) -> int:
    return path.stat().st_size


def files(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def fill(store: SessionStore) -> None:
    for i in range(30):
        await store.append("a", messages=turn(i, error=i % 3 == 0), run=run(i, "a"))
        await store.append("b", messages=[Message.user(f"b{i}")], metadata={"i": i})
    await store.append("c", metadata={"gone": True})
    await store.delete("c")
    await store.append("a", run=run(29, "a", status="failed", error="boom"), metadata={"x": 1})


async def everything(store: SessionStore) -> dict[str, Any]:
    return {sid: await store.load(sid) for sid in await store.list_sessions()}


async def test_reopen_restores_everything(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "sessions.jsonl"
    store = FileSessionStore(path, max_messages=10, max_runs=5)
    await fill(store)
    before = await everything(store)
    await store.close()
    reopened = FileSessionStore(path, max_messages=10, max_runs=5)
    assert await everything(reopened) == before
    assert list(before) == ["a", "b"]
    assert reopened.corrupt_lines == 0
    await reopened.close()


async def test_truncated_last_line_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sessions.jsonl"
    store = FileSessionStore(path)
    for i in range(3):
        await store.append("s", messages=[Message.user(f"m{i}")])
    await store.close()
    with path.open("r+b") as log:  # a crash in the middle of the last write
        log.truncate(size(path) - 10)
    caplog.set_level(logging.WARNING, logger="loom.state.file")
    store = FileSessionStore(path)
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages == [Message.user("m0"), Message.user("m1")]
    assert store.corrupt_lines == 1
    assert "incomplete last line" in caplog.text
    # The next append must not be glued onto the broken line.
    await store.append("s", messages=[Message.user("m3")])
    await store.close()
    store = FileSessionStore(path)
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages == [Message.user("m0"), Message.user("m1"), Message.user("m3")]
    assert store.corrupt_lines == 1
    await store.close()


async def test_corrupt_lines_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sessions.jsonl"
    store = FileSessionStore(path)
    await store.append("s", messages=[Message.user("one")])
    await store.close()
    with path.open("ab") as log:
        log.write(b"{not json\n[1, 2]\n" + b'{"op": "append", "sid": "s"}\n')
    store = FileSessionStore(path)
    await store.append("s", messages=[Message.user("two")])
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages == [Message.user("one"), Message.user("two")]
    assert store.corrupt_lines == 3
    assert "first at line 2" in caplog.text
    await store.close()


async def test_unserialisable_metadata_fails_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    store = FileSessionStore(path)
    await store.append("s", messages=[Message.user("one")])
    written = size(path)
    with pytest.raises(TypeError):
        await store.append("s", messages=[Message.user("two")], metadata={"bad": object()})
    assert size(path) == written
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages == [Message.user("one")]
    await store.close()


async def test_compaction_keeps_data_and_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    store = FileSessionStore(path, max_messages=10, max_runs=5)
    await fill(store)
    before, written = await everything(store), size(path)
    await store.compact()
    assert size(path) < written / 3
    assert len(path.read_bytes().splitlines()) == 2
    assert await everything(store) == before
    await store.append("b", messages=[Message.user("after")])
    expected = await everything(store)
    await store.close()
    reopened = FileSessionStore(path, max_messages=10, max_runs=5)
    assert await everything(reopened) == expected
    assert files(tmp_path) == [path]  # no temp file left behind
    await reopened.close()


async def test_compaction_runs_on_open_when_the_log_is_mostly_history(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    store = FileSessionStore(path, max_messages=8, compact_min_lines=10_000)
    for i in range(60):
        await store.append("s", messages=turn(i), run=run(i))
    before = await everything(store)
    await store.close()
    assert len(path.read_bytes().splitlines()) == 60
    reopened = FileSessionStore(path, max_messages=8, compact_min_lines=50)
    assert await everything(reopened) == before
    assert len(path.read_bytes().splitlines()) == 1
    await reopened.close()


async def test_cancelled_append_leaves_index_and_log_in_agreement(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    store = FileSessionStore(path)
    await store.append("s", messages=[Message.user("first")])
    for i in range(20):
        task = asyncio.create_task(store.append("s", messages=[Message.user(f"m{i}")]))
        for _ in range(i % 4):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    in_memory = await store.load("s")
    await store.close()
    reopened = FileSessionStore(path)
    assert await reopened.load("s") == in_memory
    await reopened.close()


async def _append_size(path: Path, prior: int) -> int:
    store = FileSessionStore(path)
    # Same-sized records: only the history before the measured append differs.
    for i in range(prior):
        await store.append("s", messages=turn(7), run=run(i))
    before = size(path)
    await store.append("s", messages=turn(7), run=run(prior))
    await store.close()
    return size(path) - before


async def test_append_cost_does_not_grow_with_history(tmp_path: Path) -> None:
    early = await _append_size(tmp_path / "early.jsonl", 10)
    late = await _append_size(tmp_path / "late.jsonl", 500)
    assert early == late
    assert early < 1500


def _writer(path: str, name: str, count: int) -> None:
    async def main() -> None:
        store = FileSessionStore(path, max_messages=10_000, max_runs=10_000, compact_min_lines=100)
        for i in range(count):
            # Large lines make torn or interleaved writes likely if locking were wrong.
            body = f"{name}-{i:04d} " + name * 1000
            record = RunRecord(run_id=f"{name}-{i}", session_id="shared", status="completed")
            await store.append(f"own-{name}", messages=[Message.user(body)])
            await store.append("shared", messages=[Message.user(body)], run=record)
        await store.close()

    asyncio.run(main())


@pytest.mark.slow
async def test_concurrent_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    count = 150
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(str(path), n, count)) for n in "xy"]
    for process in writers:
        process.start()
    compactor = FileSessionStore(path, max_messages=10_000, max_runs=10_000)
    while any(p.is_alive() for p in writers):
        await compactor.compact()  # compaction racing the writers must lose nothing
        await asyncio.sleep(0.02)
    for process in writers:
        process.join()
        assert process.exitcode == 0
    await compactor.close()
    for raw in path.read_bytes().splitlines():
        json.loads(raw)
    store = FileSessionStore(path, max_messages=10_000, max_runs=10_000)
    shared = await store.load("shared")
    assert store.corrupt_lines == 0
    assert shared is not None
    assert len(shared.messages) == len(shared.runs) == 2 * count
    for name in "xy":
        own = await store.load(f"own-{name}")
        assert own is not None
        expected = [f"{name}-{i:04d}" for i in range(count)]
        assert [m.content.split()[0] for m in own.messages] == expected
        in_shared = [m.content.split()[0] for m in shared.messages if m.content[0] == name]
        assert in_shared == expected
    await store.close()


# -- redis store -----------------------------------------------------------------------------


@pytest.fixture
async def redis_url() -> AsyncIterator[tuple[str, str]]:
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    yield url, prefix
    await delete_redis_keys(url, prefix)


async def test_redis_replicas_share_sessions(redis_url: tuple[str, str]) -> None:
    url, prefix = redis_url
    one = RedisSessionStore(url, prefix=prefix, max_messages=6)
    two = RedisSessionStore(url, prefix=prefix, max_messages=6)
    await one.append("s", messages=turn(1), run=run(1), metadata={"from": "one"})
    await two.append("s", messages=turn(2), run=run(2, status="running"))
    await one.append("s", run=run(2, status="completed"), metadata={"to": "two"})
    for store in (one, two):
        snapshot = await store.load("s")
        assert snapshot is not None
        assert snapshot.messages == turn(2)
        assert [(r.run_id, r.status) for r in snapshot.runs] == [
            ("run-000001", "completed"),
            ("run-000002", "completed"),
        ]
        assert snapshot.metadata == {"from": "one", "to": "two"}
    await one.close()
    await two.close()


async def test_redis_concurrent_appends_lose_nothing(redis_url: tuple[str, str]) -> None:
    url, prefix = redis_url
    stores = [RedisSessionStore(url, prefix=prefix, max_runs=1000) for _ in range(4)]
    await asyncio.gather(
        *(
            stores[i % 4].append("s", messages=[Message.user(f"m{i}")], run=run(i))
            for i in range(100)
        )
    )
    snapshot = await stores[0].load("s")
    assert snapshot is not None
    assert sorted(m.content for m in snapshot.messages) == sorted(f"m{i}" for i in range(100))
    assert len(snapshot.runs) == 100
    for store in stores:
        await store.close()


async def test_redis_sessions_expire_when_idle(redis_url: tuple[str, str]) -> None:
    url, prefix = redis_url
    store = RedisSessionStore(url, prefix=prefix, ttl=0.3)
    await store.append("old", messages=turn(1), run=run(1, "old"), metadata={"k": 1})
    await asyncio.sleep(0.2)
    await store.append("new", messages=[Message.user("hi")])
    assert await store.list_sessions() == ["old", "new"]
    await asyncio.sleep(0.2)
    assert await store.load("old") is None
    assert await store.list_sessions() == ["new"]
    await store.close()


async def test_redis_store_needs_a_decoding_client(redis_url: tuple[str, str]) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url[0])
    with pytest.raises(ValueError, match="decode_responses"):
        RedisSessionStore(client)
    await client.aclose()


async def test_the_stored_context_is_kept_apart_and_entries_keep_their_numbers(
    make_store: StoreFactory,
) -> None:
    from loom.core.context import ContextSummary, Handoff, StoredContext

    store = make_store(max_messages=8)
    assert await store.load_context("s") is None
    for i in range(5):
        await store.append("s", messages=turn(i))
    snapshot = await store.load_history("s")
    assert snapshot is not None
    # Five turns of four messages, eight kept: entries 12 to 19, numbered from the first ever.
    assert snapshot.first_entry == 12
    assert snapshot.messages[0].content == turn(3)[0].content
    assert snapshot.context is None
    summary = ContextSummary(upto=12, text="turns 0 to 2", run_id="r1")
    handoff = Handoff(goal="g", state="s", open_items=("o",), risks=("r",), upto=12)
    await store.save_context("s", StoredContext(summary, handoff, tokens_per_char=0.3))
    again = await store.load_history("s")
    assert again is not None
    for loaded in (await store.load_context("s"), again.context):
        assert loaded is not None
        assert loaded.summary == summary
        assert loaded.handoff == handoff
        assert loaded.tokens_per_char == 0.3
    after = await store.load("s")
    assert after is not None
    assert "loom.context" not in after.metadata  # apart from the metadata
    assert [m.content for m in after.messages] == [m.content for m in snapshot.messages]
    # A run's load may leave out what a summary covers; what it keeps stays numbered.
    await store.save_context("s", StoredContext(ContextSummary(upto=16, text="to 3")))
    history = await store.load_history("s")
    assert history is not None
    assert 12 <= history.first_entry <= 16
    assert history.first_entry + len(history.messages) == 20
    assert history.messages[-4:] == turn(4)
    await store.delete("s")
    assert await store.load_context("s") is None
