"""Pooled Redis connections after a restart (issue 21, item 3): a stale one is replaced
before use."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

from loom.state.base import StateUnavailable
from loom.state.redis_sessions import unavailable
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


async def test_redis_gone_is_state_unavailable_with_the_password_masked(
    redis_server: PrivateRedis,
) -> None:
    port = redis_server.url.rsplit(":", 1)[1].split("/")[0]
    state = RedisState(f"redis://:S3cret-pw@127.0.0.1:{port}/0?socket_timeout=1", prefix="t")
    redis_server.kill()
    try:
        with pytest.raises(StateUnavailable) as caught:
            await state.add_pending("s", "a")
        with pytest.raises(StateUnavailable):  # a script call, through the pipeline
            await state.claim_unless_marked("accepted:k", "accepting:k", "sig", 30.0)
    finally:
        redis_server.start()
        await state.close()
    assert "is unavailable" in str(caught.value)
    assert "S3cret-pw" not in str(caught.value)
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError | OSError)


def test_only_connection_failures_become_state_unavailable() -> None:
    masked = r"Redis at here is unavailable: lost \*\*\*"
    with pytest.raises(StateUnavailable, match=masked), unavailable("here", "pw"):
        raise redis.exceptions.TimeoutError("lost pw")
    with pytest.raises(StateUnavailable, match="ReadOnlyError"), unavailable("here"):
        raise redis.exceptions.ReadOnlyError()
    # Anything else is the caller's, unchanged.
    with pytest.raises(KeyError), unavailable("here", "pw"):
        raise KeyError("pw")
    with unavailable("here"):  # nothing raised: nothing to turn
        pass
