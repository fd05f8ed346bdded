"""What a session keeps in the state, and how small (issue 20, item 4): run records,
decisions and feedback events stored compactly and read back whole; the bounds and the
claim TTL as settings."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from loom import Agent, Model
from loom.broker.memory import MemoryBroker
from loom.core.messages import Message, ToolCall, Usage
from loom.core.session_store import RunRecord
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.policies.feedback import FeedbackEvent
from loom.signals import RuntimeSignal
from loom.state import state_from_url
from loom.state.endings import RunEnding
from loom.state.redis_ids import run_field, run_id_of
from loom.state.redis_records import decode_run, encode_run
from loom.state.redis_sessions import RedisSessionStore, session_key
from loom.state.redis_working import RECORDED_BUCKET, recorded_digest
from loom.state.working import NOTICE_WINDOW, SignalRecord, recorded_key
from loom.wire import decision_record, decision_view
from tests.services import delete_redis_keys, require_redis

START = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


@contextlib.asynccontextmanager
async def on_redis(**options: Any) -> AsyncIterator[tuple[Any, aioredis.Redis, str]]:
    """A ``State`` on Redis under a fresh prefix, a client reading text, and the prefix;
    closed and the prefix's keys deleted after."""
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    state = state_from_url(url, prefix=prefix, **options)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        yield state, client, prefix
    finally:
        await client.aclose()
        await state.close()
        await delete_redis_keys(url, prefix)


def record(**changes: object) -> RunRecord:
    base = RunRecord(
        run_id="run_1",
        session_id="s-1",
        status="completed",
        output="done: disk at 83%",
        usage={k: int(v) for k, v in Usage(input_tokens=120, requests=1).to_dict().items()},
        started_at=START,
        finished_at=START + timedelta(seconds=1.5),
        metadata={"signals": ["sig_a"], "transcript": {"from": 40, "count": 2}, "worker": "w"},
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"status": "failed", "error": "boom", "output": ""},
        {"finished_at": None, "status": "running", "usage": {}},
        {"usage": {"input_tokens": 0, "custom": 3}},  # not a whole Usage: kept as it is
        {"metadata": {}},
        {"output": "ünïcode ✓ " * 3},
    ],
)
def test_a_run_record_comes_back_whole_from_its_compact_form(changes: dict[str, object]) -> None:
    original = record(**changes)
    stored = encode_run(original)
    assert decode_run("run_1", "s-1", stored) == original
    # The ids are the hash field and the key; times are integers; zero counts implied.
    for absent in ("run_1", "s-1", "started_at"):
        assert absent not in stored
    assert len(stored) < len(json.dumps(original.to_dict(), separators=(",", ":")))


def test_the_compact_record_keeps_the_metadata_the_console_reads() -> None:
    stored = json.loads(encode_run(record()))
    # The worker's metadata and the usage under short names; the range as [from, count].
    assert (stored["g"], stored["x"], stored["w"]) == (["sig_a"], [40, 2], "w")
    assert stored["n"] == {"i": 120, "r": 1}  # zero counts: implied
    assert "m" not in stored
    assert decode_run("run_1", "s-1", json.dumps(stored)) == record()
    # Other metadata, and a range of another shape, stay as they are.
    other = record(metadata={"transcript": [1, 2], "k": {"v": 1}, "fencing_token": 7})
    assert json.loads(encode_run(other))["m"] == {"transcript": [1, 2], "k": {"v": 1}}
    assert decode_run("run_1", "s-1", encode_run(other)) == other


def test_a_runs_signal_ids_are_stored_packed_and_read_back_whole() -> None:
    signals = [RuntimeSignal.create("x").id for _ in range(3)]
    original = record(metadata={**record().metadata, "signals": signals})
    stored = encode_run(original)
    assert "sig_" not in stored
    assert len(json.loads(stored)["G"]) == 3 * 22  # each id 22 characters, not 36
    assert "g" not in json.loads(stored)
    assert decode_run("run_1", "s-1", stored) == original
    # As the compact form stored them before they were packed: a list under "g".
    unpacked = json.loads(stored)
    unpacked["g"] = signals
    del unpacked["G"]
    assert decode_run("run_1", "s-1", json.dumps(unpacked)) == original
    # Ids of another shape (and an empty list) stay a list.
    for kept in (["sig_A" + "0" * 31], ["sig_1", signals[0]], []):
        other = record(metadata={"signals": kept})
        assert json.loads(encode_run(other))["g"] == kept
        assert decode_run("run_1", "s-1", encode_run(other)) == other


def test_a_clock_based_fencing_token_is_stored_as_its_distance_from_the_start() -> None:
    start = int((START - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
    for token in (start - 17_354, start + 3, start - 10**9):
        original = record(metadata={**record().metadata, "fencing_token": token})
        stored = json.loads(encode_run(original))
        assert (stored["F"], "f" in stored) == (token - start, False)
        assert decode_run("run_1", "s-1", encode_run(original)) == original
    # A counter's token (the memory state's) is shorter as it is; a non-integer stays too.
    for token in (7, 10**15, "7", True):
        original = record(metadata={**record().metadata, "fencing_token": token})
        stored = json.loads(encode_run(original))
        assert (stored["f"], "F" in stored) == (token, False)
        assert decode_run("run_1", "s-1", encode_run(original)) == original


def test_a_record_stored_with_long_names_by_an_earlier_version_still_reads() -> None:
    usage = {"input_tokens": 120, "requests": 1}
    metadata = {"signals": ["sig_a"], "transcript": {"from": 40, "count": 2}, "worker": "w"}
    stored = {"t": 1772600767891011, "o": "done: disk at 83%", "d": 1500000, "u": usage}
    assert decode_run("run_1", "s-1", json.dumps(stored | {"m": metadata})) == record()


def test_a_record_stored_whole_by_an_earlier_version_still_reads() -> None:
    original = record()
    assert decode_run("run_1", "s-1", json.dumps(original.to_dict())) == original


def test_a_decision_is_stored_compactly_and_read_back_whole() -> None:
    signal = RuntimeSignal.create(
        "disk at 91% on db-1 " * 20, source="alerts", type="disk", urgency="high"
    )
    stored = decision_record(signal, "run_now", "urgency high -> run_now")
    view = decision_view(stored)
    assert view == {
        "signal_id": signal.id,
        "source": "alerts",
        "type": "disk",
        "urgency": "high",
        "summary": signal.summary[:200],
        "action": "run_now",
        "reason": "urgency high -> run_now",
        "decided_at": view["decided_at"],
    }
    decided = datetime.fromisoformat(view["decided_at"])
    assert abs((datetime.now(UTC) - decided).total_seconds()) < 600
    assert "signal_id" not in stored
    assert ", " not in stored[:20]
    # The id is packed and the reason the urgency gives is left out.
    assert signal.id not in stored
    assert signal.id.removeprefix("sig_") not in stored
    assert "->" not in stored


def test_a_decision_keeps_a_reason_of_its_own_and_an_id_it_cannot_pack() -> None:
    signal = RuntimeSignal.create("disk", source="alerts", urgency="high", id="alert-7")
    for reason in ("rule source=alerts -> observe", "urgency high -> run_now", ""):
        stored = decision_record(signal, "observe", reason)
        view = decision_view(stored)
        assert (view["signal_id"], view["action"], view["reason"]) == ("alert-7", "observe", reason)
        assert '"alert-7"' in stored


def test_a_decision_stored_compactly_by_an_earlier_version_still_reads() -> None:
    stored = {"i": "sig_" + "ab" * 16, "s": "a", "t": "b", "u": "low", "m": "x", "a": "observe"}
    stored |= {"r": "urgency low -> observe", "at": 1772600767891}
    view = decision_view(json.dumps(stored))
    assert view["signal_id"] == "sig_" + "ab" * 16
    assert view["reason"] == "urgency low -> observe"
    assert view["decided_at"] == "2026-03-04T05:06:07.891+00:00"
    # Earlier versions stored decisions whole: they come back as they are.
    whole = {"signal_id": "sig_x", "action": "queue", "decided_at": "2026-01-01T00:00:00+00:00"}
    assert decision_view(json.dumps(whole)) == whole


def test_a_feedback_event_leaves_out_defaults_and_comes_back_equal() -> None:
    event = FeedbackEvent("run_outcome", "s-1", run_id="run_1", value="completed", score=1.0)
    stored = event.to_json()
    for absent in ('"comment"', '"source"', ": "):
        assert absent not in stored
    assert FeedbackEvent.from_json(stored) == event
    # A field that happens to hold the default word of another is still kept.
    noted = FeedbackEvent("explicit", "s-1", value="up", comment="loom", source="slack")
    assert FeedbackEvent.from_json(noted.to_json()) == noted


def test_the_state_bounds_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_STATE__MAX_MESSAGES", "50")
    monkeypatch.setenv("LOOM_STATE__MAX_RUNS", "7")
    monkeypatch.setenv("LOOM_STATE__MAX_DECISIONS", "9")
    monkeypatch.setenv("LOOM_STATE__CLAIM_TTL", "3600")
    daemon = Daemon(settings=Settings(model="test"))
    assert daemon.state.sessions.max_messages == 50
    assert daemon.state.sessions.max_runs == 7
    assert daemon.state.max_decisions == 9
    assert daemon.state.recorded_ttl == 3600.0
    for name in ("MAX_MESSAGES", "MAX_RUNS", "MAX_DECISIONS", "CLAIM_TTL"):
        monkeypatch.delenv(f"LOOM_STATE__{name}")
    defaults = Settings()
    assert (defaults.state.max_messages, defaults.state.max_runs) == (400, 100)
    assert (defaults.state.max_decisions, defaults.feedback.max_session_events) == (50, 100)
    monkeypatch.setenv("LOOM_STATE__MAX_RUNS", "0")
    with pytest.raises(ValueError, match="max_runs"):
        Settings()


async def test_on_redis_records_are_compact_and_claims_live_claim_ttl() -> None:
    async with on_redis(max_runs=3, recorded_ttl=120.0) as (state, client, prefix):
        store = state.sessions
        assert isinstance(store, RedisSessionStore)
        for i in range(5):
            run = record(run_id=f"run_{i}", started_at=START + timedelta(seconds=i))
            await store.append("s-1", messages=[Message.user(f"q{i}")], run=run)
        raw = await client.hgetall(session_key(prefix, "s-1", "runs"))
        assert sorted(raw) == ["run_2", "run_3", "run_4"]  # the newest max_runs
        assert all("run_id" not in value for value in raw.values())
        snapshot = await store.load("s-1")
        assert snapshot is not None
        assert [r.run_id for r in snapshot.runs] == ["run_2", "run_3", "run_4"]
        assert snapshot.runs[-1] == record(run_id="run_4", started_at=START + timedelta(seconds=4))
        [summary] = await state.session_summaries(["s-1"])
        assert summary.last_run is not None
        assert json.loads(summary.last_run)["run_id"] == "run_4"

        signal = RuntimeSignal.create("x", session_id="s-1")
        decision = decision_record(signal, "observe", "r")
        stored = SignalRecord("s-1", decision, signal_id=signal.id)
        await state.record_signals([stored])
        # The claim is a ten-byte field of a small hash of its bucket, not a key of its own.
        assert not await client.exists(f"{prefix}:dedupe:{recorded_key(signal.id)}")
        shard, _ = recorded_digest(signal.id)
        bucket = int(time.time() // RECORDED_BUCKET)  # the server's clock is this one's
        places = [f"{prefix}:recorded:{b}:{shard}" for b in (bucket - 1, bucket, bucket + 1)]
        [claims] = [key for key in places if await client.exists(key)]
        assert await client.object("encoding", claims) == "listpack"
        binary = aioredis.Redis.from_url(require_redis())
        try:
            assert [len(field) for field in await binary.hkeys(claims)] == [10]
        finally:
            await binary.aclose()
        ttl = await client.pttl(claims)
        assert 120_000 < ttl <= 120_000 + RECORDED_BUCKET * 1000


async def test_on_redis_an_output_the_transcript_holds_is_stored_once() -> None:
    """A record whose output is its run's last reply leaves it to the transcript and says
    which entry holds it; as the transcript drops that entry the record takes the message
    back. Every output reads back, in the snapshot and in the sessions page's summary."""
    async with on_redis(max_runs=4, max_messages=4) as (state, client, prefix):
        store = state.sessions
        assert isinstance(store, RedisSessionStore)
        for i in range(6):
            run = record(run_id=f"run_{i}", output=f"reply {i}")
            turn = [Message.user(f"q{i}"), Message.assistant(f"reply {i}")]
            await store.append("s-1", messages=turn, run=run)
        raw = await client.hgetall(session_key(prefix, "s-1", "runs"))
        assert sorted(raw) == ["run_2", "run_3", "run_4", "run_5"]
        # Entries 8 to 11 are kept: runs 4 and 5's replies are stored once, there.
        for run_id, entry in (("run_4", 9), ("run_5", 11)):
            assert raw[run_id].startswith(f'{{"O":{entry},')
            assert "reply" not in raw[run_id]
        # Runs 2 and 3's replies were dropped from the transcript: their records took them
        # back, as an earlier version stored them.
        for run_id, reply in (("run_2", "reply 2"), ("run_3", "reply 3")):
            assert json.loads(raw[run_id])["o"] == reply
            assert "O" not in json.loads(raw[run_id])
        outputs = await client.zrange(session_key(prefix, "s-1", "outputs"), 0, -1, withscores=True)
        # Named by their sequence numbers (run_order scores): run_4 was the fifth stored.
        assert outputs == [("5", 9.0), ("6", 11.0)]
        snapshot = await store.load("s-1")
        assert snapshot is not None
        assert [r.output for r in snapshot.runs] == [f"reply {i}" for i in range(2, 6)]
        assert snapshot.runs[-1] == record(run_id="run_5", output="reply 5")
        [summary] = await state.session_summaries(["s-1"])
        assert summary.last_run is not None
        assert json.loads(summary.last_run)["output"] == "reply 5"

        # A record whose output is not its last message keeps it, and so does an upsert.
        await store.append("s-1", run=record(run_id="run_5", output="changed"))
        other = record(run_id="run_6", output="not the reply")
        await store.append("s-1", messages=[Message.assistant("the reply")], run=other)
        raw = await client.hgetall(session_key(prefix, "s-1", "runs"))
        assert json.loads(raw["run_5"])["o"] == "changed"
        assert json.loads(raw["run_6"])["o"] == "not the reply"
        outputs = await client.zrange(session_key(prefix, "s-1", "outputs"), 0, -1)
        assert outputs == ["5"]  # run_4; run_2 went with the run bound, run_5 is whole again
        snapshot = await store.load("s-1")
        assert snapshot is not None
        outputs = [r.output for r in snapshot.runs]
        assert outputs == ["reply 3", "reply 4", "changed", "not the reply"]


async def test_a_run_ending_stores_its_output_once_and_reads_it_back() -> None:
    """The worker's path (``finish_and_continue``, one script) stores a record the same way."""
    async with on_redis(transcript_ttl=3600.0) as (state, client, prefix):
        opening = await state.open_session("s-1", "w1", 30)
        assert opening is not None
        run = record(run_id="run_1", output="all disks fine")
        turn = (Message.user("check disks"), Message.assistant("all disks fine"))
        ending = RunEnding("s-1", run, messages=turn)
        assert (await state.finish_and_continue(opening.lease, ending, "release")).stored
        stored = await client.hget(session_key(prefix, "s-1", "runs"), "run_1")
        assert stored is not None
        assert stored.startswith('{"O":1,')
        assert "all disks fine" not in stored
        snapshot = await state.sessions.load("s-1")
        assert snapshot is not None
        assert snapshot.runs == [run]
        # It expires with the session's other keys.
        ttls = [await client.pttl(session_key(prefix, "s-1", k)) for k in ("messages", "outputs")]
        assert ttls[0] > 0
        assert abs(ttls[0] - ttls[1]) < 1000


def test_a_run_field_gives_its_run_id_back() -> None:
    loom_id = f"run_{uuid.uuid4().hex}"
    assert len(run_field(loom_id)) == 22
    looks_packed = "A" * 22
    for run_id in (loom_id, "run_1", looks_packed, "=x", "=" + looks_packed, "run_" + "F" * 32):
        assert run_id_of(run_field(run_id)) == run_id
    assert run_field(looks_packed) != looks_packed
    # The fields earlier versions used, the run id as it is, still read.
    assert run_id_of(loom_id) == loom_id


async def test_a_loom_run_record_is_named_by_its_packed_id() -> None:
    """Through the run ending's script and the plain append: the record and the run order
    under the packed id, the outbox under the run id; a retry is seen as stored; a record
    an earlier version stored under the run id as it is stays there when written again."""
    async with on_redis(transcript_ttl=3600.0) as (state, client, prefix):
        runs_key, order_key = (session_key(prefix, "s-1", k) for k in ("runs", "run_order"))
        opening = await state.open_session("s-1", "w1", 30)
        assert opening is not None
        run = record(run_id=f"run_{uuid.uuid4().hex}", output="all disks fine")
        turn = (Message.user("check disks"), Message.assistant("all disks fine"))
        ending = RunEnding("s-1", run, messages=turn, replies=['{"text":"ok"}'])
        assert await state.finish_run(opening.lease.token, ending)
        assert not await state.finish_run(opening.lease.token, ending)  # the retry
        field = run_field(run.run_id)
        assert sorted(await client.hkeys(runs_key)) == sorted([field, "ended"])
        assert await client.zrange(order_key, 0, -1) == [field]
        assert await state.unsent_replies("s-1") == {run.run_id: ['{"text":"ok"}']}
        snapshot = await state.sessions.load("s-1")
        assert snapshot is not None
        assert snapshot.runs == [run]
        [summary] = await state.session_summaries(["s-1"])
        assert summary.last_run is not None
        assert json.loads(summary.last_run)["run_id"] == run.run_id

        # As an earlier version stored it: under the run id, a suspended run, say.
        old = record(run_id=f"run_{uuid.uuid4().hex}", status="running", output="")
        await client.hset(runs_key, old.run_id, encode_run(old))
        await client.zadd(order_key, {old.run_id: 2})
        done = record(run_id=old.run_id, output="approved and done")
        await state.sessions.append("s-1", messages=[Message.assistant("approved and done")],
                                    run=done)  # fmt: skip
        assert run_field(old.run_id) not in await client.hkeys(runs_key)
        snapshot = await state.sessions.load("s-1")
        assert snapshot is not None
        assert snapshot.runs == [run, done]


async def test_a_dropped_reply_gives_its_record_only_its_text() -> None:
    """A reply with a tool call and provider data (a reasoning model's) leaves its record
    only the reply's text when the transcript drops it; an append longer than the bound,
    a reply on each side of the bound's first entry, a record the run order has lost, and
    the session's deletion."""
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    store = RedisSessionStore(url, prefix=prefix, max_messages=4, max_runs=10, ttl=3600.0)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    runs_key = session_key(prefix, "s-1", "runs")
    try:
        thinking = {"thinking": [{"type": "thinking", "thinking": "t" * 2000, "signature": "s"}]}
        call = ToolCall(id="call_1", name="lookup", arguments={"q": 1})
        reply = Message.assistant('é ✓ 😀 / "quoted"', (call,), provider_data=thinking)
        await store.append("s-1", messages=[Message.user("q0"), reply], run=record(
            run_id="run_0", output=reply.content))  # fmt: skip
        assert "O" in json.loads(await client.hget(runs_key, "run_0"))
        # Six messages at once, more than the bound: the reply is dropped in the same step.
        long = [Message.user(f"q{i}") for i in range(5)] + [Message.assistant("a1")]
        await store.append("s-1", messages=long, run=record(run_id="run_1", output="a1"))
        stored = await client.hget(runs_key, "run_0")
        assert json.loads(stored)["o"] == reply.content
        assert "thinking" not in stored
        assert len(stored) < 300
        # Entries: run_1's reply is 7, the list keeps 4 to 7. Three more entries keep
        # 7 to 10: run_1's reply is the first kept and stays where it is.
        turn = [Message.user("q2"), Message.user("q2b"), Message.assistant("a2")]
        await store.append("s-1", messages=turn, run=record(run_id="run_2", output="a2"))
        assert json.loads(await client.hget(runs_key, "run_1"))["O"] == 7
        await store.append("s-1", messages=[Message.assistant("a3")], run=record(
            run_id="run_3", output="a3"))  # fmt: skip
        assert json.loads(await client.hget(runs_key, "run_1"))["o"] == "a1"
        # A record the run order no longer holds could not be found again: it keeps its own.
        await client.delete(session_key(prefix, "s-1", "run_order"))
        await store.append("s-1", messages=[Message.assistant("a4")], run=record(
            run_id="run_3", output="a4"))  # fmt: skip
        assert json.loads(await client.hget(runs_key, "run_3"))["o"] == "a4"
        snapshot = await store.load("s-1")
        assert snapshot is not None
        ttls = [await client.pttl(session_key(prefix, "s-1", k)) for k in ("messages", "outputs")]
        assert ttls[0] > 0
        assert abs(ttls[0] - ttls[1]) < 1000
        await store.delete("s-1")
        assert not await client.keys(f"{prefix}:*")
    finally:
        await client.aclose()
        await store.close()
        await delete_redis_keys(url, prefix)


class CountingBroker:
    """Only what the ledger uses of a broker: publish, counted per routing key."""

    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, exchange: str, routing_key: str, message: object) -> None:
        self.published.append(json.loads(message.body)["session_id"])  # type: ignore[attr-defined]


async def test_no_work_notice_for_a_session_a_worker_holds() -> None:
    """The holder's ending takes the signal (tests/state_contract/test_run_steps.py), so the
    notice, which the worker taking it would drop, is not sent (issue 20, item 2)."""
    from loom.core.attention import Action
    from loom.daemon.ledger import StateLedger
    from loom.runtime.decisions import SignalDecision
    from loom.state.memory_state import MemoryState

    state = MemoryState()
    broker = CountingBroker()
    assert await state.acquire_lease("held", "w1", 30) is not None
    decisions = [
        SignalDecision(Action.QUEUE, "r", RuntimeSignal.create(f"x{i}", session_id=sid))
        for i, sid in enumerate(["held", "free", "held"])
    ]
    ledger = StateLedger(state, state, broker, dedupe_ttl=60)  # type: ignore[arg-type]
    await ledger.record(decisions)
    await ledger.wake(decisions)
    assert broker.published == ["free"]
    assert len(await state.pending("held")) == 2


async def test_one_work_notice_for_a_burst_to_a_waiting_session() -> None:
    """Signals that keep coming for a session no worker has taken yet (its notice queued
    behind others') add no notice of their own: with one a signal, a burst left a backlog
    of notices that workers took long after their signals had run (bench/soak.py), and a
    KEDA queue trigger counted signals where it meant sessions."""
    from loom.core.attention import Action
    from loom.daemon.ledger import StateLedger
    from loom.runtime.decisions import SignalDecision
    from loom.state.memory_state import MemoryState

    clock = [1000.0]
    state = MemoryState(clock=lambda: clock[0])
    broker = CountingBroker()
    ledger = StateLedger(state, state, broker, dedupe_ttl=60)  # type: ignore[arg-type]
    for batch in range(3):
        decisions = [
            SignalDecision(Action.QUEUE, "r", RuntimeSignal.create(f"x{batch}", session_id=sid))
            for sid in ("a", "b")
        ]
        await ledger.record(decisions)
        await ledger.wake(decisions)
    assert broker.published == ["a", "b"]
    assert len(await state.pending("a")) == 3
    # A worker took "a": its next signal is announced again. A notice not taken within
    # NOTICE_WINDOW (a long backlog, a queue lost) counts as lost: "b" is announced again.
    opening = await state.open_session("a", "w1", 30)
    assert opening is not None
    assert await state.release_lease(opening.lease)
    clock[0] += NOTICE_WINDOW
    decisions = [
        SignalDecision(Action.QUEUE, "r", RuntimeSignal.create("y", session_id=sid))
        for sid in ("a", "b")
    ]
    await ledger.record(decisions)
    await ledger.wake(decisions)
    assert broker.published == ["a", "b", "a", "b"]


async def test_a_stopping_worker_puts_a_notice_back_for_another() -> None:
    """A worker that is stopping takes no session: the notice goes back to the queue, since
    the state notes it as out and the session's next signals would send none."""
    from loom.daemon.worker import SessionWorker
    from loom.state.memory_state import MemoryState
    from loom.wire import TOPOLOGY
    from tests.fakes.delivery import FakeDelivery

    broker = MemoryBroker(topology=TOPOLOGY)
    await broker.start()
    worker = SessionWorker(Agent(Model.test()), broker, MemoryState(), sweep_interval=3600)
    await worker.start()
    notice = b'{"session_id": "s"}'
    try:
        taken = FakeDelivery(notice)
        await worker.handle(taken)
        assert taken.outcome == "ack"
    finally:
        await worker.stop(timeout=1)
    stopped = FakeDelivery(notice)
    await worker.handle(stopped)
    assert stopped.outcome == "retry"
    await broker.close()


async def test_on_redis_a_notice_not_taken_in_its_window_is_asked_again() -> None:
    async with on_redis() as (state, client, prefix):
        record = SignalRecord("s", "{}", "{}", ready=True, signal_id="sig-1")
        assert await state.record_signals([record]) == set()
        record = SignalRecord("s", "{}", "{}", ready=True, signal_id="sig-2")
        assert await state.record_signals([record]) == {"s"}
        asked = await client.zscore(f"{prefix}:noticed", "s")
        assert asked is not None
        await client.zadd(f"{prefix}:noticed", {"s": asked - NOTICE_WINDOW})
        record = SignalRecord("s", "{}", "{}", ready=True, signal_id="sig-3")
        assert await state.record_signals([record]) == set()
        # Taking the lease ends the notice; the mark goes with it.
        lease = await state.acquire_lease("s", "w1", 30)
        assert lease is not None
        assert await client.zscore(f"{prefix}:noticed", "s") is None


async def test_the_held_transcripts_budget_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    url = require_redis()
    monkeypatch.setenv("LOOM_STATE__HOLD_BYTES", "1000000")
    daemon = Daemon(settings=Settings(model="test", state_url=url, namespace="holdtest"))
    try:
        assert isinstance(daemon.state.sessions, RedisSessionStore)
        assert daemon.state.sessions.held.max_bytes == 1_000_000
    finally:
        await daemon.state.close()
    monkeypatch.setenv("LOOM_STATE__HOLD_BYTES", "-1")
    with pytest.raises(ValueError, match="hold_bytes"):
        Settings()
    monkeypatch.delenv("LOOM_STATE__HOLD_BYTES")
    assert Settings().state.hold_bytes == 32 * 1024 * 1024
