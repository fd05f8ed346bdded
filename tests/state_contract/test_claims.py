"""Contract tests of ``Claims`` (dedupe claims, markers, two-phase claims), run on
memory, Redis and the SQLite test backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loom.state import Claims, MemoryState
from tests.state_contract.backends import TTL, Backend, make_backend


@pytest.fixture(params=["memory", "redis", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = make_backend(request.param, tmp_path)
    yield made
    await made.close()


# -- claims -------------------------------------------------------------------------------


async def test_a_claim_is_taken_once_until_the_ttl_passes(state: Claims) -> None:
    assert await state.claim("slack:T1:Ev1", "a", TTL) is None
    assert await state.claim("slack:T1:Ev1", "b", TTL) == "a"
    assert await state.claim("slack:T1:Ev2", "b", TTL) is None
    await asyncio.sleep(TTL + 0.1)
    assert await state.claim("slack:T1:Ev1", "c", TTL) is None
    assert await state.claim("slack:T1:Ev1", "d", TTL) == "c"


async def test_forget_lets_a_key_be_claimed_again(state: Claims) -> None:
    assert await state.claim("k", "a", 60) is None
    await state.forget("k")
    await state.forget("never-seen")
    assert await state.claim("k", "b", 60) is None


async def test_concurrent_claims_let_exactly_one_through(backend: Backend) -> None:
    first = backend.new()
    states = [first, *(backend.peer(first) for _ in range(3))]
    results = await asyncio.gather(
        *(states[i % 4].claim("same", f"owner-{i}", 60) for i in range(20))
    )
    assert results.count(None) == 1


async def test_claim_tells_the_owner_from_a_duplicate(state: Claims) -> None:
    assert await state.claim("k", "sig-1", 5.0) is None
    assert await state.claim("k", "sig-1", 5.0) == "sig-1"  # the same message again
    assert await state.claim("k", "sig-2", 5.0) == "sig-1"  # a duplicate
    assert await state.claimed("k") == "sig-1"
    assert await state.claimed("never") is None
    await state.forget("k")
    assert await state.claimed("k") is None
    assert await state.claim("k", "sig-2", 5.0) is None
    assert await state.claim("short", "a", 0.05) is None
    await asyncio.sleep(0.15)
    assert await state.claim("short", "b", 5.0) is None


async def test_claim_many_claims_in_order(state: Claims) -> None:
    holders = await state.claim_many([("k", "x", 5.0), ("k", "y", 5.0), ("j", "z", 5.0)])
    assert holders == [None, "x", None]
    assert await state.claim_many([]) == []


# -- markers and two-phase claims (gateway, scheduler, heartbeat) -------------------------


async def test_markers_are_replaced_shared_and_expire(backend: Backend) -> None:
    state = backend.new()
    other = backend.peer(state)
    assert await state.marker("cron-last:job") is None
    await state.set_marker("cron-last:job", "2026-01-01T00:00:00+00:00")
    await other.set_marker("cron-last:job", "2026-01-01T00:05:00+00:00")
    assert await state.marker("cron-last:job") == "2026-01-01T00:05:00+00:00"
    await state.set_marker("probe:api", "down", ttl=TTL)
    assert await other.marker("probe:api") == "down"
    await asyncio.sleep(TTL + 0.1)
    assert await other.marker("probe:api") is None
    assert await state.marker("cron-last:job") == "2026-01-01T00:05:00+00:00"  # no TTL
    # Markers and dedupe keys are separate namespaces.
    assert await state.claimed("cron-last:job") is None


async def test_claim_unless_marked_is_a_two_phase_claim(backend: Backend) -> None:
    """The gateway's accept path: a short claim while publishing, a marker once confirmed."""
    state = backend.new()
    other = backend.peer(state)
    claim = ("accepted:k", "accepting:k")
    assert await state.claim_unless_marked(*claim, "sig-1", 5.0) is None
    assert await other.claim_unless_marked(*claim, "sig-2", 5.0) == ("claimed", "sig-1")
    assert await other.claim_unless_marked(*claim, "sig-1", 5.0) == ("claimed", "sig-1")
    await state.mark_and_release("accepted:k", "sig-1", 5.0, "accepting:k", "sig-1")
    assert await other.claimed("accepting:k") is None  # released
    assert await other.marker("accepted:k") == "sig-1"
    assert await other.claim_unless_marked(*claim, "sig-3", 5.0) == ("marked", "sig-1")
    assert await other.claimed("accepting:k") is None  # a marked key claims nothing


async def test_a_failed_two_phase_claim_is_forgotten_or_expires(backend: Backend) -> None:
    state = backend.new()
    other = backend.peer(state)
    claim = ("accepted:f", "accepting:f")
    assert await state.claim_unless_marked(*claim, "sig-1", 5.0) is None
    await state.forget("accepting:f")  # the work failed: the next try goes through
    assert await other.claim_unless_marked(*claim, "sig-2", TTL) is None
    await asyncio.sleep(TTL + 0.1)  # a claim nobody released (a crash) lapses
    assert await state.claim_unless_marked(*claim, "sig-3", 5.0) is None
    assert await state.marker("accepted:f") is None


async def test_mark_and_release_leaves_another_owners_claim(backend: Backend) -> None:
    state = backend.new()
    other = backend.peer(state)
    claim = ("accepted:o", "accepting:o")
    assert await state.claim_unless_marked(*claim, "sig-1", TTL) is None
    await asyncio.sleep(TTL + 0.1)  # sig-1's claim lapsed while it worked
    assert await other.claim_unless_marked(*claim, "sig-2", 5.0) is None
    await state.mark_and_release("accepted:o", "sig-1", TTL, "accepting:o", "sig-1")
    assert await other.claimed("accepting:o") == "sig-2"  # not sig-1's to release
    assert await other.marker("accepted:o") == "sig-1"
    await asyncio.sleep(TTL + 0.1)
    assert await other.marker("accepted:o") is None  # the marker expires with its TTL


# -- backend specifics --------------------------------------------------------------------


async def test_memory_dedupe_keys_are_bounded() -> None:
    state = MemoryState(max_dedupe_keys=3)
    for key in "abcd":
        assert await state.claim(key, "o", 60) is None
    assert await state.claim("a", "o", 60) is None  # the oldest was forgotten early
    assert await state.claim("d", "o", 60) == "o"


async def test_memory_markers_are_bounded_closest_to_expiry_first() -> None:
    now = [100.0]
    state = MemoryState(max_dedupe_keys=1000, clock=lambda: now[0])
    await state.set_marker("cron-last:job", "t0", ttl=30 * 86_400)  # set first, lives long
    await state.set_marker("probe:api", "up")  # no TTL
    for i in range(1500):  # accepted signals: one marker each, for the dedupe TTL
        await state.set_marker(f"accepted:{i}", "sig", ttl=10 + i / 1000)
    assert len(state._markers) == 1000
    assert await state.marker("cron-last:job") == "t0"  # not pushed out by the flood
    assert await state.marker("probe:api") == "up"
    assert await state.marker("accepted:0") is None  # the closest to expiry went first
    assert await state.marker("accepted:1499") == "sig"
    now[0] += 20
    await state.set_marker("accepted:next", "sig", ttl=10)
    assert len(state._markers) == 3  # the expired are dropped as time passes
    for _ in range(5000):  # replacing one marker again and again stays bounded
        await state.set_marker("probe:api", "up")
    assert len(state._marker_expiries) < 2 * 3 + 1024 + 1
