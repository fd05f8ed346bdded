"""Contract tests of ``RunEndings`` (a run's ending in one fenced step keyed by its run id,
and the outbox of its replies), and of the attention batch recording a signal once; run on
memory and Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from loom.core.messages import Message
from loom.core.session_store import RunRecord
from loom.state import State
from loom.state.endings import RunEnding
from loom.state.leases import StaleFencingToken
from loom.state.working import SignalRecord, recorded_key
from tests.state_contract.backends import TTL, Backend


def ending(run_id: str = "run-1", replies: tuple[str, ...] = ('{"r":1}',)) -> RunEnding:
    record_time = datetime(2026, 1, 1, tzinfo=UTC)
    return RunEnding(
        "s",
        RunRecord(run_id, "s", "completed", output="done", started_at=record_time),
        messages=(Message.user("hi"), Message.assistant("done")),
        metadata={"k": "v"},
        replies=replies,
    )


async def leased_with_work(state: State) -> int:
    lease = await state.acquire_lease("s", "w1", 30)
    assert lease is not None
    await state.add_pending("s", "sig-a")
    await state.take_pending("s")
    return lease.token


async def test_an_ending_stores_the_run_its_replies_and_releases_its_signals(
    state: State,
) -> None:
    token = await leased_with_work(state)

    assert await state.finish_run(token, ending()) is True

    snapshot = await state.sessions.load("s")
    assert snapshot is not None
    assert [run.run_id for run in snapshot.runs] == ["run-1"]
    assert [m.content for m in snapshot.messages] == ["hi", "done"]
    assert snapshot.metadata == {"k": "v"}
    assert await state.in_flight("s") == []
    assert await state.unsent_replies("s") == {"run-1": ['{"r":1}']}
    await state.replies_sent("s", "run-1")
    assert await state.unsent_replies("s") == {}


async def test_an_ending_stored_twice_is_stored_once(state: State) -> None:
    """A retry after a write that timed out but landed: nothing doubles."""
    token = await leased_with_work(state)
    assert await state.finish_run(token, ending()) is True
    await state.replies_sent("s", "run-1")
    await state.add_pending("s", "sig-b")
    await state.take_pending("s")  # the next run's signal, in flight

    assert await state.finish_run(token, ending()) is False

    snapshot = await state.sessions.load("s")
    assert snapshot is not None
    assert len(snapshot.messages) == 2
    assert len(snapshot.runs) == 1
    assert await state.unsent_replies("s") == {}  # not put back
    assert await state.in_flight("s") == ["sig-b"]  # the next run's, untouched


async def test_an_ending_under_a_lost_lease_stores_nothing(backend: Backend) -> None:
    state = backend.new()
    token = await leased_with_work(state)
    old = await state.lease_holder("s")
    assert old is not None
    await state.release_lease(old)
    newer = await state.acquire_lease("s", "w2", 30)
    assert newer is not None
    assert newer.token > token

    with pytest.raises(StaleFencingToken):
        await state.finish_run(token, ending())

    assert await state.sessions.load("s") is None
    assert await state.in_flight("s") == ["sig-a"]  # the new holder's to run
    assert await state.unsent_replies("s") == {}


async def test_an_ending_without_replies_leaves_the_outbox_empty(state: State) -> None:
    token = await leased_with_work(state)
    assert await state.finish_run(token, ending(replies=())) is True
    assert await state.unsent_replies("s") == {}


async def test_a_signal_recorded_again_is_kept_once(state: State) -> None:
    """The attention role redelivered a signal whose record had landed (after a crash, or
    a write that timed out): it is not pending twice."""
    record = SignalRecord("s", '{"d":1}', pending_json="sig-a", ready=True, signal_id="sig-1")

    await state.record_signals([record])
    await state.record_signals([record])

    assert await state.pending("s") == ["sig-a"]
    assert len(await state.decisions("s")) == 1
    # Forgotten (a replay of its dead letter), it is recorded again.
    await state.forget(recorded_key("sig-1"))
    await state.record_signals([record])
    assert await state.pending("s") == ["sig-a", "sig-a"]


def short_claims(backend: Backend, ttl: float, bucket: float) -> State:
    """A state whose redelivery claims last ``ttl``; on Redis their buckets are ``bucket``
    wide (a day's claims share 6-hour buckets in production)."""
    state: State = backend.new(recorded_ttl=ttl)
    if backend.kind == "redis":
        state.recorded_bucket = bucket  # type: ignore[attr-defined]
    return state


async def test_a_signal_redelivered_within_the_claim_ttl_is_kept_once_across_buckets(
    backend: Backend,
) -> None:
    """A redelivery in a later bucket of claims than the first delivery's is still found
    (the claims of the last TTL are all looked at), by another replica too."""
    state = short_claims(backend, ttl=60.0, bucket=TTL / 4)
    peer = backend.peer(state, recorded_ttl=60.0)
    if backend.kind == "redis":
        peer.recorded_bucket = TTL / 4
    first = SignalRecord("s", '{"d":1}', pending_json="sig-a", signal_id="sig-1")
    second = SignalRecord("s", '{"d":2}', pending_json="sig-b", signal_id="sig-2")
    await state.record_signals([first, second, first])  # a duplicate in one batch, too
    await asyncio.sleep(TTL)  # four buckets later
    await state.record_signals([first])
    await peer.record_signals([second])

    assert await state.pending("s") == ["sig-a", "sig-b"]
    assert len(await state.decisions("s")) == 2
    assert await peer.claimed(recorded_key("sig-1")) == "1"
    assert await state.claimed(recorded_key("sig-3")) is None


async def test_a_signal_redelivered_after_the_claim_ttl_may_be_recorded_again(
    backend: Backend,
) -> None:
    state = short_claims(backend, ttl=TTL, bucket=TTL / 4)
    record = SignalRecord("s", '{"d":1}', pending_json="sig-a", signal_id="sig-1")
    await state.record_signals([record])
    # Past the TTL and the bucket the claim was taken in, the claim is gone.
    await asyncio.sleep(TTL + TTL / 4 + 0.1)
    assert await state.claimed(recorded_key("sig-1")) is None
    await state.record_signals([record])
    assert await state.pending("s") == ["sig-a", "sig-a"]


async def test_a_claim_taken_as_a_key_still_keeps_a_signal_once(state: State) -> None:
    """The claim ``claim`` takes under the recorded key (and the one key a signal had on
    Redis before the claim hashes) holds for the attention batch too."""
    assert await state.claim(recorded_key("sig-1"), "1", 60.0) is None
    record = SignalRecord("s", '{"d":1}', pending_json="sig-a", signal_id="sig-1")
    await state.record_signals([record])
    assert await state.pending("s") == []
    await state.forget(recorded_key("sig-1"))
    await state.record_signals([record])
    assert await state.pending("s") == ["sig-a"]
