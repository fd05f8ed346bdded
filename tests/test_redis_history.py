"""A Redis session store reads only the messages appended since it last read a session.

Each test checks the held transcript against what a store holding nothing loads, while
another store (another worker) appends, deletes and recreates the session.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from loom.core.messages import Message, ToolCall
from loom.state.redis_sessions import RedisSessionStore
from tests.services import delete_redis_keys, require_redis

SID = "s-1"


@pytest.fixture
async def stores() -> AsyncIterator[Callable[..., RedisSessionStore]]:
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    made: list[RedisSessionStore] = []

    def make(**options: Any) -> RedisSessionStore:
        options.setdefault("max_messages", 7)
        made.append(RedisSessionStore(url, prefix=prefix, **options))
        return made[-1]

    yield make
    for store in made:
        await store.close()
    await delete_redis_keys(url, prefix)


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every message dict parsed into a Message from now on."""
    seen: list[dict[str, Any]] = []
    original = Message.from_dict.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Message], data: dict[str, Any]) -> Message:
        seen.append(data)
        result: Message = original(cls, data)
        return result

    monkeypatch.setattr(Message, "from_dict", classmethod(counting))
    return seen


def turn(i: int) -> list[Message]:
    call = ToolCall(f"c{i}", "look", {"i": i})
    return [
        Message.user(f"question {i}"),
        Message.assistant("", (call,)),
        Message.tool_result(call, f"answer {i}"),
        Message.assistant(f"done {i}"),
    ]


async def fresh_messages(store: RedisSessionStore) -> list[Message] | None:
    snapshot = await store.load(SID)  # ``load`` holds nothing: the whole list, parsed
    return None if snapshot is None else snapshot.messages


async def test_a_second_load_parses_only_what_another_store_appended(
    stores: Callable[..., RedisSessionStore], parsed: list[dict[str, Any]]
) -> None:
    writer, reader = stores(max_messages=100), stores(max_messages=100)
    await writer.append(SID, messages=turn(1) + turn(2), metadata={"k": 1})
    first = await reader.load_history(SID)
    assert first is not None
    assert len(parsed) == 8
    await writer.append(SID, messages=turn(3), metadata={"k": 2})
    parsed.clear()
    second = await reader.load_history(SID)
    assert second is not None
    assert [m["content"] for m in parsed] == [m.content for m in turn(3)]
    assert second.messages == turn(1) + turn(2) + turn(3)
    assert second.metadata == {"k": 2}
    assert second.messages[:8] == first.messages


async def test_its_own_append_is_held_without_reading_it_back(
    stores: Callable[..., RedisSessionStore], parsed: list[dict[str, Any]]
) -> None:
    store = stores(max_messages=100)
    await store.append(SID, messages=turn(1))
    assert await store.load_history(SID) is not None
    added = turn(2)
    await store.append(SID, messages=added)
    parsed.clear()
    snapshot = await store.load_history(SID)
    assert snapshot is not None
    assert parsed == []
    assert all(a is b for a, b in zip(snapshot.messages[4:], added, strict=True))


async def test_a_recreated_session_is_read_whole(
    stores: Callable[..., RedisSessionStore],
) -> None:
    writer, reader = stores(), stores()
    await writer.append(SID, messages=turn(1))
    await reader.load_history(SID)
    await writer.delete(SID)
    assert await reader.load_history(SID) is None
    await writer.append(SID, messages=turn(1))
    await reader.load_history(SID)
    # Deleted and made again with as many messages as the reader holds: another session.
    await writer.delete(SID)
    replacement = turn(9)
    await writer.append(SID, messages=replacement)
    snapshot = await reader.load_history(SID)
    assert snapshot is not None
    assert snapshot.messages == replacement


@pytest.mark.parametrize("seed", range(4))
async def test_held_transcripts_match_a_fresh_read_through_any_writes(
    stores: Callable[..., RedisSessionStore], seed: int
) -> None:
    rng = random.Random(seed)
    writer, reader = stores(), stores(hold_bytes=rng.choice([3_000, 10**6]))
    counter = 0
    for _ in range(40):
        action = rng.random()
        if action < 0.08:
            await rng.choice([writer, reader]).delete(SID)
        elif action < 0.75:
            size = rng.choice([1, 2, 3, 9])
            batch = [m for i in range(counter, counter + 3) for m in turn(i)][:size]
            counter += 3
            await rng.choice([writer, reader]).append(SID, messages=batch)
        snapshot = await reader.load_history(SID)
        held = None if snapshot is None else snapshot.messages
        assert held == await fresh_messages(writer)
        assert reader.held.size <= reader.held.max_bytes


async def test_held_memory_is_bounded(stores: Callable[..., RedisSessionStore]) -> None:
    store = stores(max_messages=100, hold_bytes=20_000)
    for n in range(30):
        await store.append(f"s-{n}", messages=turn(n))
        await store.load_history(f"s-{n}")
        assert store.held.size <= 20_000
    assert 0 < len(store.held) < 30


async def test_nothing_is_held_past_its_time(
    stores: Callable[..., RedisSessionStore], parsed: list[dict[str, Any]]
) -> None:
    store = stores(hold_seconds=0.0)
    await store.append(SID, messages=turn(1))
    await store.load_history(SID)
    parsed.clear()
    await store.load_history(SID)
    assert len(parsed) == 4
    assert len(store.held) == 1


async def test_sessions_in_turn_that_do_not_all_fit_are_partly_held(
    stores: Callable[..., RedisSessionStore], parsed: list[dict[str, Any]]
) -> None:
    writer = stores(max_messages=100)
    reader = stores(max_messages=100, hold_bytes=20_000)
    sessions = [f"s-{n}" for n in range(12)]
    for n, session_id in enumerate(sessions):
        await writer.append(session_id, messages=turn(n))
    for _ in range(2):  # the first round fills the budget, the second finds it full
        for session_id in sessions:
            await reader.load_history(session_id)
    held = len(reader.held)
    assert 0 < held < len(sessions)
    parsed.clear()
    for session_id in sessions:
        await reader.load_history(session_id)
    # The held ones parse nothing; least recently used would have parsed every session.
    assert len(parsed) == 4 * (len(sessions) - held)
    assert reader.held.hits >= held
