"""``State``, the union of the ports: isolation across all of them, construction from a
URL, lifecycle, the deprecated import paths, and what only the Redis backend has."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from loom.state import (
    Claims,
    FeedbackLog,
    Leases,
    MemoryState,
    State,
    WorkingState,
    state_from_url,
)
from loom.state.base import StateUnavailable

# -- isolation ----------------------------------------------------------------------------


async def test_sessions_never_see_each_other(state: State) -> None:
    await state.add_pending("alice", "a-sig")
    await state.set_risk("alice", "k", "alice risk")
    await state.record_decision("alice", "a-decision")
    await state.request_interrupt("alice", "a-int", "r")
    lease = await state.acquire_lease("alice", "w", 60)
    assert lease is not None
    await state.check_fence("alice", 10**18)
    assert await state.pending("bob") == []
    assert await state.take_pending("bob") == []
    assert await state.risks("bob") == {}
    assert await state.decisions("bob") == []
    assert await state.wait_interrupt("bob", 0.05) is None
    assert await state.lease_holder("bob") is None
    bob = await state.acquire_lease("bob", "w", 60)
    assert bob is not None
    await state.check_fence("bob", bob.token)
    assert await state.in_flight("alice") == []
    assert await state.pending("alice") == ["a-sig"]
    assert await state.wait_interrupt("alice", 1) == ("a-int", "r")


# -- construction -------------------------------------------------------------------------


def test_state_from_url() -> None:
    assert isinstance(state_from_url("memory://"), MemoryState)
    state = state_from_url("memory://", max_pending=7)
    assert state.max_pending == 7
    from loom.state.redis_state import RedisState

    redis_state = state_from_url("redis://user:pw@localhost:6379/0", prefix="x")
    assert isinstance(redis_state, RedisState)
    assert redis_state.url == "redis://user:***@localhost:6379/0"
    assert isinstance(state_from_url("rediss://localhost:6380/0"), RedisState)
    for bad in ["amqp://localhost", "localhost:6379", ""]:
        with pytest.raises(ValueError, match=r"memory:// or redis://"):
            state_from_url(bad)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@localhost/0", "redis://:***@localhost/0"),
        (
            "rediss://user:p%40ss@h:6380/1?ssl_cert_reqs=none",
            "rediss://user:***@h:6380/1?ssl_cert_reqs=none",
        ),
        ("unix:///run/redis.sock?db=2&password=pw", "unix:///run/redis.sock?db=2&password=***"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    from loom.state.redis_sessions import mask_url

    assert mask_url(url) == shown


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryState(max_pending=0)


def test_import_loom_does_not_import_redis() -> None:
    code = "import sys, loom, loom.state; assert 'redis' not in sys.modules, 'redis imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_old_import_paths_still_work() -> None:
    from loom.state import base, file, memory, redis
    from loom.state.file_sessions import FileSessionStore
    from loom.state.memory_sessions import InMemorySessionStore
    from loom.state.redis_state import RedisState

    assert redis.RedisState is RedisState
    assert memory.InMemorySessionStore is InMemorySessionStore
    assert file.FileSessionStore is FileSessionStore
    for name in ("Lease", "HeldLease", "SignalRecord", "DecisionContext", "Taken", "replica_id"):
        assert hasattr(base, name)


def test_state_is_the_union_of_the_ports() -> None:
    for port in (Claims, WorkingState, Leases, FeedbackLog):
        assert issubclass(State, port)
        assert isinstance(MemoryState(), port)


# -- Redis specifics ----------------------------------------------------------------------


async def test_redis_keys_expire_when_idle_but_tokens_keep_increasing(
    redis_prefix: tuple[str, str],
) -> None:
    from loom.state.redis_state import RedisState

    url, prefix = redis_prefix
    state = RedisState(url, prefix=prefix, session_ttl=60)
    raw = state._client
    try:
        await state.add_pending("s", "x")
        assert 0 < await raw.pttl(f"{prefix}:s:{{s}}:pending") <= 60_000
        lease = await state.acquire_lease("s", "w", 120)
        assert lease is not None
        # The token key outlives the lease it was issued with.
        assert await raw.pttl(f"{prefix}:s:{{s}}:token") > 60_000
        # Everything of the session expired (simulated): the next token is still larger.
        await raw.delete(f"{prefix}:s:{{s}}:token", f"{prefix}:s:{{s}}:lease")
        again = await state.acquire_lease("s", "w", 1)
        assert again is not None
        assert again.token > lease.token
        forever = RedisState(url, prefix=prefix, session_ttl=None)
        await forever.add_pending("t", "x")
        assert await raw.pttl(f"{prefix}:s:{{t}}:pending") == -1
        await forever.close()
    finally:
        await state.close()


async def test_redis_waits_longer_than_the_socket_timeout(redis_prefix: tuple[str, str]) -> None:
    from loom.state.redis_state import RedisState

    url, prefix = redis_prefix
    state = RedisState(url, prefix=prefix, socket_timeout=0.5)
    other = RedisState(url, prefix=prefix)
    try:
        assert await state.wait_interrupt("s", 1.2) is None
        waiter = asyncio.create_task(state.wait_interrupt("s", 3))
        await asyncio.sleep(1.2)
        await other.request_interrupt("s", "late", "r")
        assert await asyncio.wait_for(waiter, 3) == ("late", "r")
    finally:
        await state.close()
        await other.close()


async def test_redis_unavailable_is_reported_without_the_password() -> None:
    from loom.state.redis_state import RedisState

    state = RedisState("redis://loom:s3cr%40t@127.0.0.1:1/0?password=s3cr@t", socket_timeout=1)
    assert "s3cr" not in state.url
    with pytest.raises(StateUnavailable) as caught:
        await state.start()
    message = str(caught.value)
    assert "127.0.0.1:1" in message
    assert "***" in message
    assert "s3cr" not in message
    assert await state.ping() is False
    with pytest.raises(StateUnavailable):
        await state.add_pending("s", "x")
    with pytest.raises(StateUnavailable):
        await state.sessions.load("s")
    await state.close()


async def test_redis_start_and_ping(redis_prefix: tuple[str, str]) -> None:
    from loom.state.redis_state import RedisState

    url, prefix = redis_prefix
    state = RedisState(url, prefix=prefix)
    await state.start()
    assert await state.ping() is True
    await state.close()
