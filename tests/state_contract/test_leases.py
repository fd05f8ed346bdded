"""Contract tests of ``Leases`` (leases, fencing tokens, held leases), run on memory,
Redis and the SQLite test backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loom.state import Lease, Leases, MemoryState, StaleFencingToken
from tests.state_contract.backends import TTL, Backend, make_backend, ms


@pytest.fixture(params=["memory", "redis", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = make_backend(request.param, tmp_path)
    yield made
    await made.close()


async def test_lease_is_exclusive_until_it_expires(backend: Backend) -> None:
    state = backend.new()
    other = backend.peer(state)
    first = await state.acquire_lease("s", "worker-1", TTL)
    assert first is not None
    assert (first.session_id, first.owner) == ("s", "worker-1")
    assert await other.acquire_lease("s", "worker-2", TTL) is None
    assert await other.lease_holder("s") == first
    assert await other.acquire_lease("elsewhere", "worker-2", TTL) is not None
    await asyncio.sleep(TTL + 0.1)
    assert await state.lease_holder("s") is None
    second = await other.acquire_lease("s", "worker-2", 60)
    assert second is not None
    assert second.token > first.token
    assert await state.lease_holder("s") == second
    # The first worker finds out it lost the lease.
    assert await state.renew_lease(first, 60) is False
    assert await state.release_lease(first) is False
    assert await state.lease_holder("s") == second
    assert await other.renew_lease(second, 60) is True
    assert await other.release_lease(second) is True
    assert await other.release_lease(second) is False
    assert await state.lease_holder("s") is None


async def test_renew_extends_and_a_lapsed_lease_cannot_be_renewed(state: Leases) -> None:
    lease = await state.acquire_lease("s", "w", TTL)
    assert lease is not None
    for _ in range(3):
        await asyncio.sleep(TTL / 2)
        assert await state.renew_lease(lease, TTL) is True
    assert await state.lease_holder("s") == lease
    await asyncio.sleep(TTL + 0.1)
    assert await state.renew_lease(lease, TTL) is False
    assert await state.lease_holder("s") is None


async def test_release_by_a_non_holder_is_refused(state: Leases) -> None:
    lease = await state.acquire_lease("s", "w1", 60)
    assert lease is not None
    assert await state.release_lease(Lease("s", "w2", lease.token)) is False
    assert await state.release_lease(Lease("s", "w1", lease.token + 1)) is False
    assert await state.renew_lease(Lease("s", "w2", lease.token), 60) is False
    assert await state.lease_holder("s") == lease
    assert await state.release_lease(lease) is True


async def test_tokens_increase_across_releases(state: Leases) -> None:
    tokens = []
    for i in range(5):
        lease = await state.acquire_lease("s", f"w{i}", 60)
        assert lease is not None
        tokens.append(lease.token)
        assert await state.release_lease(lease) is True
    assert tokens == sorted(set(tokens))


async def test_concurrent_acquire_has_exactly_one_winner(backend: Backend) -> None:
    first = backend.new()
    states = [first, *(backend.peer(first) for _ in range(4))]
    leases = await asyncio.gather(
        *(states[i % len(states)].acquire_lease("s", f"worker-{i}", 60) for i in range(20))
    )
    winners = [lease for lease in leases if lease is not None]
    assert len(winners) == 1
    assert await first.lease_holder("s") == winners[0]


# -- fencing ------------------------------------------------------------------------------


async def test_check_fence_rejects_an_older_token(state: Leases) -> None:
    await state.check_fence("s", 10)
    await state.check_fence("s", 10)
    await state.check_fence("s", 12)
    with pytest.raises(StaleFencingToken):
        await state.check_fence("s", 11)
    await state.check_fence("other", 1)  # fences are per session


async def test_a_lost_lease_is_fenced_off_as_soon_as_a_newer_one_exists(state: Leases) -> None:
    old = await state.acquire_lease("s", "w1", TTL)
    assert old is not None
    await state.check_fence("s", old.token)
    await asyncio.sleep(TTL + 0.1)
    new = await state.acquire_lease("s", "w2", 60)
    assert new is not None
    # The new holder has not written yet, but the old token is stale already.
    with pytest.raises(StaleFencingToken):
        await state.check_fence("s", old.token)
    await state.check_fence("s", new.token)
    with pytest.raises(StaleFencingToken):
        await state.check_fence("s", old.token)


# -- held leases (the stuck-run check) ----------------------------------------------------


async def test_held_leases_lists_live_leases_longest_held_first(backend: Backend) -> None:
    state = backend.new()
    other = backend.peer(state)
    assert await state.held_leases() == []
    first = await state.acquire_lease("first", "w1", 60)
    await asyncio.sleep(0.05)
    second = await other.acquire_lease("second", "w2", 60)
    short = await other.acquire_lease("short", "w3", TTL)
    assert first is not None
    assert second is not None
    assert short is not None
    held = await other.held_leases()
    assert [h.lease for h in held] == [first, second, short]
    assert held[0].held_for >= held[1].held_for >= 0
    assert held[0].held_for - held[1].held_for >= 0.04
    assert [h.lease for h in await state.held_leases(limit=1)] == [first]
    assert await state.held_leases(limit=0) == []
    # Renewing keeps the time it was taken; releasing and expiring drop it.
    await asyncio.sleep(0.05)
    assert await state.renew_lease(first, 60) is True
    assert (await state.held_leases(limit=1))[0].held_for >= 0.09
    assert await state.release_lease(first) is True
    await asyncio.sleep(TTL + 0.1)
    assert [h.lease for h in await state.held_leases()] == [second]
    # A session taken again counts from the new lease.
    again = await state.acquire_lease("short", "w4", 60)
    assert again is not None
    held = await state.held_leases()
    assert [h.lease for h in held] == [second, again]
    assert held[1].held_for < held[0].held_for


# -- backend specifics --------------------------------------------------------------------


async def test_memory_lease_expiry_follows_the_injected_clock() -> None:
    now = [100.0]
    state = MemoryState(clock=lambda: now[0])
    lease = await state.acquire_lease("s", "w", 30)
    assert lease is not None
    now[0] += 29.9
    assert await state.renew_lease(lease, 30) is True
    now[0] += 30.1
    assert await state.lease_holder("s") is None
    assert await state.claim("k", "a", 5) is None
    now[0] += 5
    assert await state.claim("k", "b", 5) is None


async def test_redis_leases_index_is_pruned_and_expires(redis_prefix: tuple[str, str]) -> None:
    """``{prefix}:leases`` loses a dead worker's entry at the next acquire or release (not
    only when someone reads held_leases), and expires with the longest lease written to it."""
    from loom.state.redis_state import RedisState

    url, prefix = redis_prefix
    state = RedisState(url, prefix=prefix)
    raw, index = state._client, f"{prefix}:leases"
    try:
        dead = await state.acquire_lease("dead", "w1", TTL)  # never released: the worker died
        assert dead is not None
        assert 0 < await raw.pttl(index) <= ms(TTL)
        await asyncio.sleep(TTL + 0.1)
        live = await state.acquire_lease("live", "w2", 30)
        assert live is not None
        assert await raw.zrange(index, 0, -1) == ["live"]
        assert ms(TTL) < await raw.pttl(index) <= 30_000
        short = await state.acquire_lease("short", "w3", TTL)  # a shorter TTL keeps the longer
        assert short is not None
        assert await raw.pttl(index) > ms(TTL)
        assert await state.renew_lease(live, 60) is True
        assert 30_000 < await raw.pttl(index) <= 60_000
        await asyncio.sleep(TTL + 0.1)
        assert await state.release_lease(live) is True
        assert await raw.exists(index) == 0  # "short" expired, "live" released: nothing left
        assert await raw.exists(f"{prefix}:s:{{live}}:leased_at") == 0
    finally:
        await state.close()
