"""Which parsed transcripts a Redis session store holds when they do not all fit."""

from __future__ import annotations

import json

import pytest

from loom.state.redis_history import HeldHistories, HeldHistory, weight

ENTRY = json.dumps({"role": "user", "content": "x" * 100})
SESSION_BYTES = 4 * weight(ENTRY)  # four messages a session


def mirror() -> HeldHistory:
    return HeldHistory.parsed("2026-01-01T00:00:00Z", 4, [ENTRY] * 4)


def load(held: HeldHistories, session_id: str) -> bool:
    """One load as ``load_history`` does it: look, then hold what was read. True on a hit."""
    hit = held.get(session_id) is not None
    held.put(session_id, mirror())
    return hit


def test_sessions_in_turn_that_do_not_fit_keep_a_held_set() -> None:
    held = HeldHistories(max_bytes=5 * SESSION_BYTES)
    sessions = [f"s-{n}" for n in range(20)]
    for _ in range(10):
        for session_id in sessions:
            load(held, session_id)
    # Least recently used would drop each session just before its next load: no hit at all.
    assert held.misses == 20 + 9 * 15
    assert held.hits == 9 * 5
    assert len(held) == 5
    assert held.size <= held.max_bytes


def test_a_session_loaded_more_often_takes_a_place() -> None:
    held = HeldHistories(max_bytes=3 * SESSION_BYTES)
    for session_id in ("a", "b", "c"):
        load(held, session_id)
    # Loaded before no more often than "a" (the least recent held): not let in.
    assert not load(held, "hot")
    assert not load(held, "hot")
    assert held.refused == 2
    assert not load(held, "hot")  # loaded twice before, "a" once: in, in place of "a"
    assert held.refused == 2
    assert load(held, "hot")
    assert held.get("a") is None
    assert [held.get(s) is not None for s in ("b", "c")] == [True, True]


def test_a_held_session_that_grows_stays_and_drops_others() -> None:
    held = HeldHistories(max_bytes=3 * SESSION_BYTES)
    for session_id in ("a", "b", "c"):
        load(held, session_id)
    bigger = mirror().extended(8, [ENTRY] * 4, 8)
    held.put("c", bigger)
    assert held.get("c") is bigger
    assert held.get("a") is None
    assert held.size <= held.max_bytes


def test_room_made_by_expiry_lets_newcomers_in() -> None:
    held = HeldHistories(max_bytes=2 * SESSION_BYTES, hold_seconds=0.0)
    for session_id in ("a", "b"):
        load(held, session_id)
    # Held no time at all: each load finds the budget empty again.
    assert not load(held, "c")
    assert held.refused == 0
    assert len(held) == 1


def test_load_counts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("loom.state.redis_history.USES_KEPT", 50)
    held = HeldHistories(max_bytes=SESSION_BYTES)
    for n in range(500):
        held.get(f"s-{n}")
        assert len(held._uses) <= 50


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="hold_bytes must be 0 or more"):
        HeldHistories(max_bytes=-1)


def test_a_look_without_a_load_counts_nothing() -> None:
    held = HeldHistories(max_bytes=SESSION_BYTES)
    load(held, "a")
    assert held.peek("a") is not None
    assert held.peek("b") is None
    assert (held.hits, held.misses) == (0, 1)
    assert held._uses == {"a": 1}


def test_a_large_newcomer_is_compared_with_every_session_it_would_drop() -> None:
    held = HeldHistories(max_bytes=10 * SESSION_BYTES)
    load(held, "cold")
    hot = [f"hot-{n}" for n in range(9)]
    for _ in range(5):
        for session_id in hot:
            load(held, session_id)
    big = HeldHistory.parsed("2026-01-01T00:00:00Z", 32, [ENTRY] * 32)  # room of eight
    for _ in range(3):
        held.get("big")
        held.put("big", big)
    # "big" was loaded more often than "cold", but it would also drop seven sessions loaded
    # more often than itself: it is not let in, and every hot session stays.
    assert held.get("big") is None
    assert all(held.peek(session_id) is not None for session_id in hot)
    assert held.size <= held.max_bytes


def test_a_large_newcomer_drops_several_sessions_loaded_less_often() -> None:
    held = HeldHistories(max_bytes=4 * SESSION_BYTES)
    for session_id in ("a", "b", "c", "d"):
        load(held, session_id)
    big = HeldHistory.parsed("2026-01-01T00:00:00Z", 12, [ENTRY] * 12)  # room of three
    for _ in range(3):
        held.get("big")
        held.put("big", big)
    assert held.peek("big") is big
    assert [held.peek(s) is not None for s in ("a", "b", "c", "d")] == [False] * 3 + [True]
    assert held.size == held.max_bytes


def test_counting_too_many_sessions_forgets_those_not_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("loom.state.redis_history.USES_KEPT", 64)
    held = HeldHistories(max_bytes=2 * SESSION_BYTES)
    for _ in range(3):
        for session_id in ("a", "b"):
            load(held, session_id)
    for n in range(62):  # as often as the held ones, so halving alone forgets no one
        for _ in range(3):
            held.get(f"s-{n}")
    held.get("one-more")  # 65 counted: halved, the ones loaded once forgotten
    held.get("two-more")  # 65 again, every count alike
    assert len(held._uses) <= 64
    # The held sessions keep their counts: a newcomer loaded once before does not beat them.
    assert held._uses.get("a", 0) >= 1
    assert held._uses.get("b", 0) >= 1
    assert not load(held, "one-more")
    assert held.peek("one-more") is None
