"""Contract tests of ``FeedbackLog`` (the feedback streams), run on memory and Redis."""

from __future__ import annotations

import json

import pytest

from loom.state import FeedbackLog, State
from loom.state.feedback_log import DEFAULT_MAX_SESSION_FEEDBACK
from tests.state_contract.backends import Backend


async def test_feedback_is_read_newest_last_per_session_and_for_all(state: FeedbackLog) -> None:
    assert await state.read_feedback() == []
    assert await state.read_feedback("s") == []
    for i in range(3):
        await state.add_feedback("s", json.dumps({"n": i}))
    await state.add_feedback("t", json.dumps({"n": 9}))

    def numbers(events: list[str]) -> list[int]:
        return [json.loads(event)["n"] for event in events]

    assert numbers(await state.read_feedback("s")) == [0, 1, 2]
    assert numbers(await state.read_feedback("s", limit=2)) == [1, 2]
    assert numbers(await state.read_feedback("t")) == [9]
    assert numbers(await state.read_feedback()) == [0, 1, 2, 9]
    assert numbers(await state.read_feedback(limit=1)) == [9]
    assert await state.read_feedback("s", limit=0) == []
    assert await state.read_feedback("nobody") == []


async def test_feedback_streams_are_bounded_dropping_the_oldest(backend: Backend) -> None:
    state = backend.new(max_feedback=10, max_session_feedback=10)
    for i in range(300):
        await state.add_feedback("s", json.dumps({"n": i}))
    for session_id in ("s", None):
        kept = [json.loads(e)["n"] for e in await state.read_feedback(session_id, limit=1000)]
        # Redis trims whole stream nodes (XADD MAXLEN ~): up to a node (100 entries) more.
        assert 10 <= len(kept) <= 110
        assert kept == list(range(300 - len(kept), 300))


async def test_a_sessions_feedback_has_its_own_small_bound(backend: Backend) -> None:
    """Every session has a stream: its bound is the per-session one (default 200), kept
    exactly; only the stream of all sessions keeps up to max_feedback."""
    assert backend.new().max_session_feedback == DEFAULT_MAX_SESSION_FEEDBACK == 200
    state = backend.new(max_feedback=1000, max_session_feedback=7)
    for i in range(300):
        await state.add_feedback("s", json.dumps({"n": i}))
        await state.add_feedback("t", json.dumps({"n": -i}))
    for session_id, sign in (("s", 1), ("t", -1)):
        kept = [json.loads(e)["n"] for e in await state.read_feedback(session_id, limit=1000)]
        assert kept == [sign * n for n in range(293, 300)]
    every = await state.read_feedback(None, limit=1000)
    assert len(every) == 600
    with pytest.raises(ValueError, match="at least 1"):
        backend.new(max_session_feedback=0)


async def test_redis_feedback_streams_expire_with_the_session(
    redis_prefix: tuple[str, str],
) -> None:
    from loom.state.redis_state import RedisState

    url, prefix = redis_prefix
    state = RedisState(url, prefix=prefix, session_ttl=60)
    raw = state._client
    try:
        await state.add_feedback("s", '{"n": 1}')
        assert await raw.type(f"{prefix}:s:{{s}}:feedback") == "stream"
        assert 0 < await raw.pttl(f"{prefix}:s:{{s}}:feedback") <= 60_000
        assert await raw.type(f"{prefix}:feedback") == "stream"
        assert await raw.xlen(f"{prefix}:feedback") == 1
    finally:
        await state.close()


def loom_events(session_id: str) -> list[str]:
    """Events as ``FeedbackPolicy`` records them, of every kind and shape."""
    from loom.policies.feedback import FeedbackEvent

    signals = ["sig_0123456789abcdef0123456789abcdef", "sig_fedcba9876543210fedcba9876543210"]
    events = [
        FeedbackEvent("run_outcome", session_id, run_id="run_00ff" * 8, value="completed",
                      score=1.0, source="runtime",
                      data={"duration": 0.003066, "cost_usd": 0.0, "signals": signals}),
        FeedbackEvent("run_outcome", session_id, run_id="run_1", value="failed", score=-1.0,
                      comment="provider said no", source="runtime",
                      data={"duration": 2.5, "cost_usd": None, "signals": None}),
        FeedbackEvent("run_outcome", session_id, run_id="run_2", value="cancelled",
                      source="runtime", data={"duration": 1, "signals": ["not-hex"]}),
        FeedbackEvent("tool_failure", session_id, run_id="run_3", value="shell", score=-1.0,
                      comment="exit 1", source="runtime", data={"tool_call_id": "call_1"}),
        FeedbackEvent("quality_verdict", session_id, run_id="run_4", value="fail", score=-1.0,
                      comment="tone: not met", source="quality"),
        FeedbackEvent("explicit", session_id, value="up", score=0.5, comment="ünïcode ✓",
                      source="http"),
        FeedbackEvent("explicit", session_id, value="down", score=-1.0, source="slack",
                      id="fb_sig_1", data={"signal_id": "sig_1", "channel": "C1", "ts": None}),
        FeedbackEvent("explicit", session_id, value="neutral", score=0.0),  # source "loom"
    ]  # fmt: skip
    return [event.to_json() for event in events]


async def test_loom_events_come_back_as_the_same_text(state: State) -> None:
    """Whatever form a backend keeps them in, the events read back byte for byte, added
    one by one and with a run's ending, per session and in the stream of all."""
    from datetime import UTC, datetime

    from loom.core.session_store import RunRecord
    from loom.state.endings import RunEnding

    added, ended = loom_events("s"), loom_events("t")
    for event in added:
        await state.add_feedback("s", event)
    opening = await state.open_session("t", "w1", 30)
    assert opening is not None
    at = datetime(2026, 1, 1, tzinfo=UTC)
    record = RunRecord("run-1", "t", "completed", started_at=at)
    finish = await state.finish_and_continue(
        opening.lease, RunEnding("t", record, feedback=tuple(ended)), "release"
    )
    assert finish.stored

    assert await state.read_feedback("s", limit=100) == added
    assert await state.read_feedback("t", limit=100) == ended
    assert await state.read_feedback(None, limit=100) == added + ended
