"""Pooled Redis connections after a restart (issue 21, item 3): a stale one is replaced
before use."""

from __future__ import annotations

import asyncio

from loom.state.redis_state import RedisState
from tests.private_redis import PrivateRedis


async def test_a_connection_gone_stale_in_a_restart_is_replaced_before_use(
    redis_server: PrivateRedis,
) -> None:
    state = RedisState(f"{redis_server.url}?health_check_interval=1", prefix="t")
    try:
        await state.add_pending("s", "a")  # a pooled connection, now idle
        redis_server.kill()
        redis_server.start()
        await asyncio.sleep(1.2)  # idle past the health check interval
        assert await state.pending("s") == ["a"]  # AOF kept it; the stale connection went
    finally:
        await state.close()
