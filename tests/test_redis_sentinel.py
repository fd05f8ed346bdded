"""A Redis Sentinel failover is a supported event (issue 21, item 6): the state follows the
primary a ``redis+sentinel://`` URL names, keeps what was replicated, and fencing stays
sound: a lease taken before the failover cannot write after a newer one was taken."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from loom.state import state_from_url
from loom.state.base import StateUnavailable
from loom.state.leases import StaleFencingToken
from tests.private_redis import PrivateRedis, PrivateSentinel


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[PrivateRedis, PrivateRedis, PrivateSentinel]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    for part in ("primary", "replica", "sentinel"):
        (tmp_path / part).mkdir()
    primary = PrivateRedis(tmp_path / "primary").start()
    servers = [primary]
    try:
        replica = PrivateRedis(
            tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(primary.port))
        ).start()
        servers.append(replica)
        watcher = PrivateSentinel(tmp_path / "sentinel", primary).start()
        servers.append(watcher)
        yield primary, replica, watcher
    finally:
        for server in servers:
            server.stop()


async def replicated(replica: PrivateRedis, key: str) -> None:
    client = Redis.from_url(replica.url)
    try:
        for _ in range(200):
            if await client.exists(key):
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"{key} never reached the replica")
    finally:
        await client.aclose()


async def test_the_state_follows_a_sentinel_failover_and_fencing_holds(
    sentinel: tuple[PrivateRedis, PrivateRedis, PrivateSentinel],
) -> None:
    primary, replica, watcher = sentinel
    state = state_from_url(
        f"redis+sentinel://127.0.0.1:{watcher.port}/loom/0", prefix="t", socket_timeout=1.0
    )
    try:
        await state.start()
        old = await state.acquire_lease("s", "w1", 1.0)
        assert old is not None
        await state.add_pending("s", "a")
        await replicated(replica, "t:s:{s}:pending")

        primary.kill()  # the Sentinel promotes the replica
        for _ in range(300):
            try:
                await state.add_pending("s", "b")
                break
            except StateUnavailable:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the state never reached the promoted replica")

        assert await state.pending("s") == ["a", "b"]
        await asyncio.sleep(1.1)  # the old lease expires
        newer = await state.acquire_lease("s", "w2", 30)
        assert newer is not None
        assert newer.token > old.token
        with pytest.raises(StaleFencingToken):
            await state.check_fence("s", old.token)
    finally:
        await state.close()
