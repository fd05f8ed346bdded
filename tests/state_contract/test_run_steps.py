"""Contract tests of a leased run's steps (``open_session``, ``take_run``,
``finish_and_continue``: one round trip each on Redis); run on memory and Redis. Each keeps
the guarantees of the steps it folds: fencing, no signal lost, no second lease."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from loom.core.session_store import RunRecord
from loom.state import State
from loom.state.endings import RunEnding
from loom.state.leases import StaleFencingToken


def record(action: str, n: int = 0) -> str:
    return json.dumps({"action": action, "signal": {"id": f"sig-{action}-{n}"}})


def ending(run_id: str, feedback: tuple[str, ...] = ()) -> RunEnding:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return RunEnding("s", RunRecord(run_id, "s", "completed", started_at=at), feedback=feedback)


async def test_open_takes_the_lease_and_the_pending_signals_in_one_step(state: State) -> None:
    await state.set_risk("s", "disk", "disk almost full")
    await state.add_pending("s", record("queue"))

    opening = await state.open_session("s", "w1", 30)

    assert opening is not None
    assert not opening.released
    assert not opening.suspended
    assert opening.take is not None
    assert opening.take.signals == (record("queue"),)
    assert opening.take.risks == {"disk": "disk almost full"}
    assert await state.pending("s") == []
    assert await state.in_flight("s") == [record("queue")]
    assert not await state.scheduled("s")
    started, _ = await state.run_times("s")
    assert started is not None
    # One lease at a time: a second opener gets nothing and takes nothing.
    await state.add_pending("s", record("queue", 1))
    assert await state.open_session("s", "w2", 30) is None
    assert await state.pending("s") == [record("queue", 1)]


async def test_open_with_nothing_to_do_lets_the_session_go_in_the_same_step(
    state: State,
) -> None:
    await state.add_pending("s", record("observe"))  # observed: asks for no run
    await state.mark_ready("s")

    opening = await state.open_session("s", "w1", 30)

    assert opening is not None
    assert opening.released
    assert opening.take is None
    assert await state.lease_holder("s") is None
    assert "s" not in await state.ready_sessions()
    assert await state.pending("s") == [record("observe")]


async def test_open_takes_signals_left_in_flight_even_when_none_ask(state: State) -> None:
    await state.add_pending("s", record("observe"))
    await state.take_pending("s")  # a run that died left it in flight
    await state.add_pending("s", record("observe", 1))

    opening = await state.open_session("s", "w1", 30)

    assert opening is not None
    assert opening.take is not None
    assert opening.left == (record("observe"),)
    assert opening.take.signals == (record("observe"), record("observe", 1))


async def test_open_of_a_put_off_session_takes_nothing(state: State) -> None:
    await state.add_pending("s", record("queue"))
    await state.schedule("s", 60, 120)

    opening = await state.open_session("s", "w1", 30)

    assert opening is not None
    assert opening.released
    assert opening.take is None
    assert await state.pending("s") == [record("queue")]


async def test_open_finds_unsent_replies_and_keeps_the_lease_for_them(state: State) -> None:
    first = await state.open_session("s", "w1", 1)
    assert first is not None
    await state.add_pending("s", record("queue"))
    first = await state.take_run(first.lease) and first
    assert await state.finish_run(first.lease.token, ending("run-1")) is True
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with_reply = RunEnding("s", RunRecord("run-2", "s", "completed", started_at=at),
                           replies=('{"r":2}',))  # fmt: skip
    assert await state.finish_run(first.lease.token, with_reply) is True
    await state.release_lease(first.lease)

    opening = await state.open_session("s", "w2", 30)

    assert opening is not None
    assert not opening.released
    assert opening.unsent == {"run-2": ['{"r":2}']}
    assert opening.take is None


async def test_take_run_is_fenced(state: State) -> None:
    old = await state.acquire_lease("s", "w1", 30)
    assert old is not None
    await state.release_lease(old)
    new = await state.acquire_lease("s", "w2", 30)
    assert new is not None
    await state.add_pending("s", record("queue"))

    with pytest.raises(StaleFencingToken):
        await state.take_run(old)
    assert await state.pending("s") == [record("queue")]
    take = await state.take_run(new)
    assert take is not None
    assert take.signals == (record("queue"),)
    assert await state.take_run(new) is None  # nothing asks any more


async def test_an_ending_takes_the_next_signals_in_the_same_step(state: State) -> None:
    assert await state.open_session("s", "w1", 30) is not None  # nothing yet: let go
    await state.add_pending("s", record("queue"))
    opening = await state.open_session("s", "w1", 30)
    assert opening is not None
    assert opening.take is not None
    await state.add_pending("s", record("queue", 1))  # came during the run

    finish = await state.finish_and_continue(
        opening.lease, ending("run-1", feedback=('{"kind":"run_outcome"}',)), "take"
    )

    assert finish.stored
    assert not finish.released
    assert finish.take is not None
    assert finish.take.signals == (record("queue", 1),)
    assert await state.lease_holder("s") == opening.lease
    assert await state.read_feedback("s") == ['{"kind":"run_outcome"}']
    _, ended = await state.run_times("s")
    assert ended is not None
    # Then nothing is left: the ending lets the session go, ready mark and all.
    await state.mark_ready("s")
    finish = await state.finish_and_continue(opening.lease, ending("run-2"), "take")
    assert finish.stored
    assert finish.released
    assert not finish.work_left
    assert await state.lease_holder("s") is None
    assert "s" not in await state.ready_sessions()
    assert await state.in_flight("s") == []


async def test_an_ending_retried_after_it_let_go_takes_nothing(state: State) -> None:
    """A retry whose first attempt landed and released the lease: the session is no longer
    the caller's, whatever waits now."""
    await state.add_pending("s", record("queue"))
    opening = await state.open_session("s", "w1", 30)
    assert opening is not None
    assert opening.take is not None
    first = await state.finish_and_continue(opening.lease, ending("run-1"), "take")
    assert first.released
    await state.add_pending("s", record("queue", 1))

    again = await state.finish_and_continue(opening.lease, ending("run-1"), "take")

    assert not again.stored
    assert again.take is None
    assert again.released
    assert await state.pending("s") == [record("queue", 1)]
    assert await state.lease_holder("s") is None


async def test_an_ending_retried_after_it_took_the_next_signals_hands_them_over(
    state: State,
) -> None:
    """A retry whose first attempt landed and took the next run's signals (its answer was
    lost, a timeout): the retry gives those signals again rather than letting the session
    go with them stranded in flight, where no sweep would find them."""
    await state.add_pending("s", record("queue"))
    opening = await state.open_session("s", "w1", 30)
    assert opening is not None
    await state.add_pending("s", record("queue", 1))  # came during the run
    await state.mark_ready("s")  # as its record did
    first = await state.finish_and_continue(opening.lease, ending("run-1"), "take")
    assert first.take is not None

    again = await state.finish_and_continue(opening.lease, ending("run-1"), "take")

    assert not again.stored
    assert again.take is not None
    assert again.take.signals == (record("queue", 1),)
    assert await state.lease_holder("s") == opening.lease
    # Asked to release instead, the retry keeps the session ready for whoever takes it.
    released = await state.finish_and_continue(opening.lease, ending("run-1"), "release")
    assert released.released
    assert released.work_left
    assert "s" in await state.ready_sessions()
    assert await state.in_flight("s") == [record("queue", 1)]


async def test_an_ending_under_an_old_token_stores_and_takes_nothing(state: State) -> None:
    old = await state.acquire_lease("s", "w1", 30)
    assert old is not None
    await state.release_lease(old)
    new = await state.acquire_lease("s", "w2", 30)
    assert new is not None
    await state.add_pending("s", record("queue"))

    with pytest.raises(StaleFencingToken):
        await state.finish_and_continue(old, ending("run-1"), "take")

    assert await state.pending("s") == [record("queue")]
    assert await state.lease_holder("s") == new
    snapshot = await state.sessions.load("s")
    assert snapshot is None or snapshot.runs == []


async def test_a_release_ending_keeps_the_ready_mark_while_work_is_left(state: State) -> None:
    lease = await state.acquire_lease("s", "w1", 30)
    assert lease is not None
    await state.add_pending("s", record("queue"))
    await state.mark_ready("s")

    finish = await state.finish_and_continue(lease, ending("run-1"), "release")

    assert finish.released
    assert finish.work_left
    assert await state.lease_holder("s") is None
    assert "s" in await state.ready_sessions()
    assert await state.pending("s") == [record("queue")]


async def test_a_ready_record_forgets_the_put_off_run(state: State) -> None:
    from loom.state.working import SignalRecord

    await state.schedule("s", 60, 120)
    await state.record_signals([SignalRecord("s", "{}", record("queue"), ready=True)])

    assert not await state.scheduled("s")
    assert "s" in await state.ready_sessions()


async def test_a_ready_record_names_the_sessions_a_worker_holds(state: State) -> None:
    """A held session needs no work notice (issue 20): its holder's ending takes what was
    recorded before it. Only ready records written by the call count."""
    from loom.state.working import SignalRecord

    lease = await state.acquire_lease("s", "w1", 30)
    assert lease is not None

    held = await state.record_signals(
        [
            SignalRecord("s", "{}", record("queue", 1), ready=True, signal_id="sig-1"),
            SignalRecord("free", "{}", record("queue", 2), ready=True, signal_id="sig-2"),
            SignalRecord("s2", "{}", record("observe", 3), signal_id="sig-3"),
        ]
    )
    assert held == {"s"}
    # The holder's ending takes the signal the notice would have announced.
    finish = await state.finish_and_continue(lease, ending("run-1"), "take")
    assert finish.take is not None
    assert finish.take.signals == (record("queue", 1),)
    # A redelivered record (already recorded) is not named: its notice goes out again.
    again = [SignalRecord("s", "{}", record("queue", 1), ready=True, signal_id="sig-1")]
    assert await state.record_signals(again) == set()


async def test_a_ready_record_names_a_session_a_notice_is_out_for(state: State) -> None:
    """A burst of signals to a session that waits for a worker queues one notice, not one a
    signal: the worker that takes it (or whichever takes the session's lease first) takes
    them all. Once a lease was taken on the session, the next signal asks a notice again."""
    from loom.state.working import SignalRecord

    def ready(session_id: str, n: int) -> SignalRecord:
        return SignalRecord(session_id, "{}", record("queue", n), ready=True, signal_id=f"sig-{n}")

    # Two records of one session in a batch: one notice for both.
    assert await state.record_signals([ready("s", 1), ready("s", 2)]) == set()
    assert await state.record_signals([ready("s", 3), ready("t", 4)]) == {"s"}
    assert await state.record_signals([ready("t", 5)]) == {"t"}
    # A record that does not ask for a run counts neither way.
    observed = SignalRecord("u", "{}", record("observe", 6), signal_id="sig-6")
    assert await state.record_signals([observed]) == set()
    # A worker took the session (the lease's holder takes what is pending): the notice is
    # no longer out, and once the lease is gone the next signal asks one again.
    opening = await state.open_session("s", "w1", 30)
    assert opening is not None
    assert opening.take is not None
    assert list(opening.take.signals) == [record("queue", n) for n in (1, 2, 3)]
    assert await state.record_signals([ready("s", 7)]) == {"s"}  # held: its ending takes it
    assert await state.release_lease(opening.lease)
    assert await state.record_signals([ready("s", 8)]) == set()
    assert await state.record_signals([ready("s", 9)]) == {"s"}


async def test_a_batch_delivered_again_asks_its_notice_again(state: State) -> None:
    """The notice a batch asked for may never have gone out (its publish failed, so the
    batch comes again): its records, recorded before, ask again, even beside a new signal
    of the session that the note alone would have kept quiet."""
    from loom.state.working import SignalRecord

    def ready(n: int) -> SignalRecord:
        return SignalRecord("s", "{}", record("queue", n), ready=True, signal_id=f"sig-{n}")

    assert await state.record_signals([ready(1)]) == set()
    assert await state.record_signals([ready(1), ready(2)]) == set()
    assert await state.record_signals([ready(3)]) == {"s"}
    assert await state.pending("s") == [record("queue", n) for n in (1, 2, 3)]
