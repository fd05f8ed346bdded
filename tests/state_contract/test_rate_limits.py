"""Contract tests of ``RateLimits`` (governance's sliding-window counters), run on memory
and Redis, and a limit held across three OS processes sharing one Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import redis.asyncio as aioredis

from loom.core.governance import RateLimits
from loom.state.memory_rate_limits import MemoryRateLimits
from tests.state_contract.backends import TTL, Backend


def limits_of(state: Any) -> RateLimits:
    limits: RateLimits = state.rate_limits
    return limits


async def test_a_limit_admits_exactly_n_uses_then_says_how_long_to_wait(state: Any) -> None:
    limits = limits_of(state)
    assert [await limits.take("k", 3, 60) for _ in range(3)] == [None, None, None]
    wait = await limits.take("k", 3, 60)
    assert wait is not None
    assert 59 < wait <= 60
    assert await limits.take("other", 3, 60) is None  # keys are apart


async def test_uses_leave_the_window_as_it_slides(state: Any) -> None:
    limits, window = limits_of(state), 1.0  # long enough for a slow machine's sleeps
    assert await limits.take("k", 2, window) is None
    await asyncio.sleep(0.3)
    assert await limits.take("k", 2, window) is None
    wait = await limits.take("k", 2, window)
    assert wait is not None
    assert wait <= 0.7
    await asyncio.sleep(wait + 0.02)
    assert await limits.take("k", 2, window) is None  # one free again, not two
    assert await limits.take("k", 2, window) is not None


async def test_a_refused_use_is_not_counted(state: Any) -> None:
    limits = limits_of(state)
    assert await limits.take("k", 1, TTL) is None
    for _ in range(5):
        assert await limits.take("k", 1, TTL) is not None
    await asyncio.sleep(TTL + 0.05)
    assert await limits.take("k", 1, TTL) is None


async def test_replicas_share_one_limit_under_concurrency(backend: Backend) -> None:
    first = backend.new()
    handles = [first, *(backend.peer(first) for _ in range(3))]
    results = await asyncio.gather(
        *(limits_of(handles[i % 4]).take("shared", 5, 60) for i in range(40))
    )
    assert results.count(None) == 5


async def test_a_limit_that_is_not_positive_is_refused(state: Any) -> None:
    with pytest.raises(ValueError, match="positive"):
        await limits_of(state).take("k", 0, 60)
    with pytest.raises(ValueError, match="positive"):
        await limits_of(state).take("k", 1, 0)


async def test_memory_limits_keep_at_most_max_keys() -> None:
    limits = MemoryRateLimits(max_keys=3)
    for i in range(10):
        assert await limits.take(f"k{i}", 1, 60) is None
    assert len(limits) == 3
    assert await limits.take("k9", 1, 60) is not None  # the newest keys are kept


async def test_redis_limit_keys_expire_after_their_window(redis_prefix: tuple[str, str]) -> None:
    from loom.state.redis_state import RedisState

    url, prefix = redis_prefix
    state = RedisState(url, prefix=prefix)
    client = aioredis.Redis.from_url(url)
    try:
        assert await state.rate_limits.take("shell*", 10, 60) is None
        ttl_ms = await client.pttl(f"{prefix}:rate:shell*")
        assert 59_000 < ttl_ms <= 60_000
    finally:
        await client.aclose()
        await state.close()


_TAKER = textwrap.dedent(
    """
    import asyncio, sys
    from loom.state.redis_state import RedisState

    async def main(url, prefix):
        state = RedisState(url, prefix=prefix)
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        admitted = 0
        for _ in range(10):
            if await state.rate_limits.take("governance:shell*", 10, 60) is None:
                admitted += 1
            await asyncio.sleep(0)
        await state.close()
        print(admitted, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_three_processes_share_one_redis_limit_of_10_per_minute(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", _TAKER, url, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for taker in takers:
            assert taker.stdout is not None
            assert taker.stdout.readline().strip() == "ready"
        for taker in takers:
            assert taker.stdin is not None
            taker.stdin.write("go\n")
            taker.stdin.flush()
        admitted = [int(taker.communicate(timeout=60)[0].strip()) for taker in takers]
    finally:
        for taker in takers:
            if taker.poll() is None:
                taker.kill()
    assert sum(admitted) == 10, admitted
