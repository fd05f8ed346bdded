"""Feedback events in Redis's streams (issue 20): a compact stored form that gives the
event's text back byte for byte, old entries still read, and no more bytes per run than
the compact form needs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from loom.core.session_store import RunRecord
from loom.policies.feedback import FeedbackEvent
from loom.state.endings import RunEnding
from loom.state.redis_feedback import (
    COMPACT,
    WHOLE,
    decode_feedback,
    encode_feedback,
    stored_event,
)
from loom.state.redis_sessions import session_key
from loom.state.redis_state import RedisState
from tests.services import delete_redis_keys, require_redis
from tests.state_contract.test_feedback_log import loom_events

SIGNALS = ["sig_" + uuid.UUID(int=n).hex for n in (1, 2)]


def run_outcome(session_id: str = "s-1") -> FeedbackEvent:
    return FeedbackEvent(
        "run_outcome",
        session_id,
        run_id=f"run_{uuid.uuid4().hex}",
        value="completed",
        score=1.0,
        source="runtime",
        # A time with microseconds: its text's length does not depend on the clock.
        at=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        data={"duration": 0.003066, "cost_usd": 0.0, "signals": SIGNALS},
    )


@pytest.mark.parametrize("text", loom_events("s-1"))
def test_every_kind_of_event_is_stored_compactly_and_given_back_exactly(text: str) -> None:
    field, stored = encode_feedback("s-1", text)
    assert field == COMPACT
    assert len(stored) < len(text)
    assert '"s-1"' not in stored  # the key (or the stream of all's field) names the session
    assert decode_feedback("s-1", field, stored) == text
    assert FeedbackEvent.from_json(stored_event("s-1", {COMPACT: stored})).to_json() == text


def test_a_run_outcome_is_stored_in_under_half_its_json() -> None:
    text = run_outcome().to_json()
    field, stored = encode_feedback("s-1", text)
    assert field == COMPACT
    assert len(text) == 357
    assert len(stored) <= 162, stored


@pytest.mark.parametrize("cost", [0.0, 0.25, None, 0, "0.0"])
def test_a_run_outcomes_cost_is_left_out_only_when_it_is_zero(cost: object) -> None:
    text = run_outcome().to_json().replace('"cost_usd":0.0', f'"cost_usd":{json.dumps(cost)}')
    field, stored = encode_feedback("s-1", text)
    assert (field, '"c":' in stored) == (COMPACT, cost != 0.0 or type(cost) is not float)
    assert decode_feedback("s-1", field, stored) == text
    # Data without a cost, with the cost elsewhere, or a cost that reads as "none" (false),
    # is given back as it came too.
    for data in ('{"duration":0.5}', '{"signals":null,"cost_usd":0.0}', "{}", '{"cost_usd":false}'):
        other = text.replace(text[text.index('"data":') + 7 : -1], data)
        field, stored = encode_feedback("s-1", other)
        assert decode_feedback("s-1", field, stored) == other


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 1}',
        "not JSON at all",
        "[1, 2]",
        # another session's event, under this session
        FeedbackEvent("explicit", "s-2", value="up", score=1.0).to_json(),
        # what the compact form would write differently: an integer score, escaped text,
        # spaces, fields in another order, a time not in UTC, an unknown kind or field
        '{"id":"fb_1","kind":"explicit","session_id":"s-1","value":"up","score":1,'
        '"at":"2026-01-01T00:00:00+00:00"}',
        '{"id":"fb_1","kind":"explicit","session_id":"s-1","comment":"\\u00e9",'
        '"at":"2026-01-01T00:00:00+00:00"}',
        '{"id": "fb_1", "kind": "explicit", "session_id": "s-1", '
        '"at": "2026-01-01T00:00:00+00:00"}',
        '{"kind":"explicit","id":"fb_1","session_id":"s-1","at":"2026-01-01T00:00:00+00:00"}',
        '{"id":"fb_1","kind":"praise","session_id":"s-1","at":"2026-01-01T00:00:00+00:00"}',
        '{"id":"fb_1","kind":"explicit","session_id":"s-1","at":"2026-01-01T00:00:00+00:00",'
        '"extra":1}',
        # a cancelled run's outcome with a score the value does not give, and none where
        # the value gives one
        '{"id":"fb_1","kind":"run_outcome","session_id":"s-1","value":"completed",'
        '"at":"2026-01-01T00:00:00+00:00"}',
        # data whose names collide with the short names
        '{"id":"fb_1","kind":"run_outcome","session_id":"s-1","value":"completed",'
        '"score":1.0,"at":"2026-01-01T00:00:00+00:00","data":{"duration":1,"d":2}}',
        '{"id":"fb_1","kind":"run_outcome","session_id":"s-1","value":"completed",'
        '"score":1.0,"at":"2026-01-01T00:00:00+00:00","data":{"g":"sig_x"}}',
        # a value that is a list or an object (no score can be looked up for it)
        '{"id":"fb_1","kind":"explicit","session_id":"s-1","value":["up"],'
        '"at":"2026-01-01T00:00:00+00:00"}',
        '{"id":"fb_1","kind":"explicit","session_id":"s-1","value":{"thumb":"up"},'
        '"score":1.0,"at":"2026-01-01T00:00:00+00:00"}',
        '{"id":"fb_1","kind":"quality_verdict","session_id":"s-1","value":{"pass":true},'
        '"score":1.0,"source":"quality","at":"2026-01-01T00:00:00+00:00"}',
        # nested deeper than the JSON parser goes
        "[" * 100_000,
    ],
)
def test_text_of_any_other_shape_is_stored_as_it_came(text: str) -> None:
    field, stored = encode_feedback("s-1", text)
    assert (field, stored) == (WHOLE, text)
    assert decode_feedback("s-1", field, stored) == text


async def test_values_of_any_shape_are_stored_by_both_writes() -> None:
    """``add_feedback`` and a run's ending (``finish_and_continue``) keep text the compact
    form cannot represent as it came, as the memory state does, rather than fail."""
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    state = RedisState(url, prefix=prefix)
    listed = (
        '{"id":"fb_1","kind":"explicit","session_id":"s-1","value":["up"],'
        '"at":"2026-01-01T00:00:00+00:00"}'
    )
    nested = (
        '{"id":"fb_2","kind":"explicit","session_id":"s-1","value":{"thumb":"up"},'
        '"score":1.0,"at":"2026-01-01T00:00:00+00:00"}'
    )
    try:
        await state.add_feedback("s-1", listed)
        opening = await state.open_session("s-1", "w1", 30)
        assert opening is not None
        record = RunRecord("run-1", "s-1", "completed", started_at=datetime(2026, 1, 1, tzinfo=UTC))
        ending = RunEnding("s-1", record, feedback=(nested,))
        assert (await state.finish_and_continue(opening.lease, ending, "release")).stored
        assert await state.read_feedback("s-1") == [listed, nested]
        assert await state.read_feedback() == [listed, nested]
    finally:
        await state.close()
        await delete_redis_keys(url, prefix)


async def test_an_entry_this_version_cannot_expand_does_not_hide_the_others() -> None:
    """A newer version's compact entry (a kind code this one does not know) is given as
    stored, as the memory state gives any text it holds; ``FeedbackEvent.from_json``
    refuses it as it refuses any unreadable text, and the other entries read."""
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    state = RedisState(url, prefix=prefix)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        before = run_outcome().to_json()
        await state.add_feedback("s-1", before)
        newer = '{"i":"AAAAAAAAAAAAAAAAAAAAAA","k":"z","t":1767225600000000}'
        await client.xadd(session_key(prefix, "s-1", "feedback"), {COMPACT: newer})
        after = run_outcome().to_json()
        await state.add_feedback("s-1", after)
        assert await state.read_feedback("s-1") == [before, newer, after]
        with pytest.raises(ValueError, match="unknown feedback kind"):
            FeedbackEvent.from_json(newer)
        assert stored_event("s-1", {COMPACT: "not JSON"}) == "not JSON"
    finally:
        await client.aclose()
        await state.close()
        await delete_redis_keys(url, prefix)


def test_a_time_the_compact_form_cannot_shorten_is_kept_as_it_is() -> None:
    text = '{"id":"fb_1","kind":"explicit","session_id":"s-1","at":"2026-01-01T01:00:00+01:00"}'
    field, stored = encode_feedback("s-1", text)
    assert field == COMPACT
    assert '"2026-01-01T01:00:00+01:00"' in stored
    assert decode_feedback("s-1", field, stored) == text


def test_an_unknown_entry_field_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a feedback entry field"):
        decode_feedback("s-1", "x", "{}")


async def test_events_stored_by_an_earlier_version_still_read() -> None:
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    state = RedisState(url, prefix=prefix)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        old = run_outcome().to_json()
        await client.xadd(session_key(prefix, "s-1", "feedback"), {"event": old})
        await client.xadd(f"{prefix}:feedback", {"session": "s-1", "event": old})
        new = run_outcome().to_json()
        await state.add_feedback("s-1", new)
        assert await state.read_feedback("s-1") == [old, new]
        assert await state.read_feedback() == [old, new]
    finally:
        await client.aclose()
        await state.close()
        await delete_redis_keys(url, prefix)


async def test_a_runs_feedback_costs_redis_its_compact_form_only() -> None:
    """The run's outcome, written with its ending, takes no more than the compact form in
    either stream (it was the whole JSON, 357 bytes here, session id and all, in each)."""
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    state = RedisState(url, prefix=prefix, max_session_feedback=100)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    stream = session_key(prefix, "s-1", "feedback")
    try:
        events = [run_outcome().to_json() for _ in range(150)]
        at = datetime(2026, 1, 1, tzinfo=UTC)
        for n, event in enumerate(events):
            opening = await state.open_session("s-1", "w1", 30)
            assert opening is not None
            record = RunRecord(f"run-{n}", "s-1", "completed", started_at=at)
            ending = RunEnding("s-1", record, feedback=(event,))
            assert (await state.finish_and_continue(opening.lease, ending, "release")).stored
        assert await state.read_feedback("s-1", limit=1000) == events[-100:]
        for key, names in ((stream, [COMPACT]), (f"{prefix}:feedback", ["session", COMPACT])):
            entries = await client.xrange(key)
            assert all(list(fields) == names for _, fields in entries)
            assert max(len(fields[COMPACT]) for _, fields in entries) <= 170
            assert all('"s-1"' not in fields[COMPACT] for _, fields in entries)
        # 100 of these outcomes took 48 KB of Redis as whole JSON; about 24 KB now.
        assert await client.memory_usage(stream, samples=0) < 32 * 1024
        assert json.loads(events[-1])["session_id"] == "s-1"
    finally:
        await client.aclose()
        await state.close()
        await delete_redis_keys(url, prefix)
