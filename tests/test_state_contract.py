"""Contract tests for the ``State`` port, run against MemoryState and a real Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from loom.state import Lease, MemoryState, StaleFencingToken, State, state_from_url
from loom.state.base import StateUnavailable
from tests.services import delete_redis_keys, require_redis

TTL = 0.2  # short enough to wait out, long enough for a round trip to finish first


class Backend:
    """Makes states of one kind; ``peer`` is another handle on the same data, the way a
    second replica sees it (for memory, the same object: one process shares one state)."""

    def __init__(self, kind: str, url: str = "", prefix: str = "") -> None:
        self.kind, self.url, self.prefix = kind, url, prefix
        self.states: list[State] = []

    def new(self, **options: Any) -> State:
        state: State
        if self.kind == "memory":
            state = MemoryState(**options)
        else:
            from loom.state.redis import RedisState

            state = RedisState(self.url, prefix=self.prefix, **options)
        self.states.append(state)
        return state

    def peer(self, state: State, **options: Any) -> State:
        return state if self.kind == "memory" else self.new(**options)

    async def close(self) -> None:
        for state in self.states:
            await state.close()
        if self.kind == "redis":
            await delete_redis_keys(self.url, self.prefix)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        made = Backend("memory")
    else:
        made = Backend("redis", require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}")
    yield made
    await made.close()


@pytest.fixture
def state(backend: Backend) -> State:
    return backend.new()


# -- dedupe -----------------------------------------------------------------------------------


async def test_remember_is_true_once_until_the_ttl_passes(state: State) -> None:
    assert await state.remember("slack:T1:Ev1", TTL) is True
    assert await state.remember("slack:T1:Ev1", TTL) is False
    assert await state.remember("slack:T1:Ev2", TTL) is True
    await asyncio.sleep(TTL + 0.1)
    assert await state.remember("slack:T1:Ev1", TTL) is True
    assert await state.remember("slack:T1:Ev1", TTL) is False


async def test_forget_lets_a_key_be_remembered_again(state: State) -> None:
    assert await state.remember("k", 60) is True
    await state.forget("k")
    await state.forget("never-seen")
    assert await state.remember("k", 60) is True


async def test_concurrent_remember_lets_exactly_one_through(backend: Backend) -> None:
    first = backend.new()
    states = [first, *(backend.peer(first) for _ in range(3))]
    results = await asyncio.gather(*(states[i % 4].remember("same", 60) for i in range(20)))
    assert results.count(True) == 1


# -- pending and in flight --------------------------------------------------------------------


async def test_pending_is_bounded_and_drops_the_oldest(backend: Backend) -> None:
    state = backend.new(max_pending=3)
    lengths = [await state.add_pending("s", f"sig-{i}") for i in range(5)]
    assert lengths == [1, 2, 3, 3, 3]
    assert await state.pending("s") == ["sig-2", "sig-3", "sig-4"]
    assert await state.pending_count("s") == 3
    assert await state.pending_count("other") == 0


async def test_take_pending_moves_signals_in_flight(state: State) -> None:
    assert await state.take_pending("s") == []
    await state.add_pending("s", "a")
    await state.add_pending("s", "b")
    assert await state.take_pending("s") == ["a", "b"]
    assert await state.pending("s") == []
    assert await state.pending_count("s") == 0
    assert await state.in_flight("s") == ["a", "b"]
    await state.finish_in_flight("s")
    assert await state.in_flight("s") == []
    assert await state.take_pending("s") == []


async def test_take_pending_returns_what_a_crashed_run_left_first(backend: Backend) -> None:
    crashed = backend.new()
    await crashed.add_pending("s", "a")
    assert await crashed.take_pending("s") == ["a"]
    # That worker died without finish_in_flight; another picks the session up.
    survivor = backend.peer(crashed)
    await survivor.add_pending("s", "b")
    assert await survivor.take_pending("s") == ["a", "b"]
    await survivor.finish_in_flight("s")
    assert await survivor.in_flight("s") == []


async def test_in_flight_is_bounded_too(backend: Backend) -> None:
    state = backend.new(max_pending=3)
    for name in "abc":
        await state.add_pending("s", name)
    await state.take_pending("s")
    for name in "de":
        await state.add_pending("s", name)
    assert await state.take_pending("s") == ["c", "d", "e"]


async def test_take_pending_drops_interrupt_requests(state: State) -> None:
    await state.add_pending("s", "urgent")
    await state.request_interrupt("s", "sig-urgent", "critical alert")
    assert await state.take_pending("s") == ["urgent"]
    assert await state.wait_interrupt("s", 0.05) is None
    await state.request_interrupt("s", "sig-later", "after the take")
    assert await state.wait_interrupt("s", 1) == ("sig-later", "after the take")


# -- risks and decisions ----------------------------------------------------------------------


async def test_risks_add_replace_clear_in_order(state: State) -> None:
    assert await state.risks("s") == {}
    await state.set_risk("s", "disk", "disk 91% full")
    await state.set_risk("s", "cpu", "cpu hot")
    assert await state.risks("s") == {"disk": "disk 91% full", "cpu": "cpu hot"}
    # A risk reported again counts as the newest.
    await state.set_risk("s", "disk", "disk 97% full")
    risks = await state.risks("s")
    assert list(risks.items()) == [("cpu", "cpu hot"), ("disk", "disk 97% full")]
    await state.clear_risk("s", "cpu")
    await state.clear_risk("s", "never-set")
    assert await state.risks("s") == {"disk": "disk 97% full"}


async def test_risks_are_bounded_oldest_first(backend: Backend) -> None:
    state = backend.new(max_risks=2)
    for key in ["a", "b", "c"]:
        await state.set_risk("s", key, key.upper())
    assert list((await state.risks("s")).items()) == [("b", "B"), ("c", "C")]
    await state.set_risk("s", "b", "B2")
    await state.set_risk("s", "d", "D")
    assert list((await state.risks("s")).items()) == [("b", "B2"), ("d", "D")]


async def test_decisions_are_bounded_newest_last(backend: Backend) -> None:
    state = backend.new(max_decisions=3)
    assert await state.decisions("s") == []
    for i in range(5):
        await state.record_decision("s", json.dumps({"n": i}))
    assert [json.loads(d)["n"] for d in await state.decisions("s")] == [2, 3, 4]
    assert [json.loads(d)["n"] for d in await state.decisions("s", limit=2)] == [3, 4]
    assert await state.decisions("s", limit=0) == []


# -- ready set --------------------------------------------------------------------------------


async def test_ready_set_is_idempotent_and_longest_waiting_first(state: State) -> None:
    assert await state.ready_sessions() == []
    for session_id in ["b", "a", "b", "c", "a"]:
        await state.mark_ready(session_id)
    assert await state.ready_sessions() == ["b", "a", "c"]
    assert await state.ready_sessions(limit=2) == ["b", "a"]
    await state.clear_ready("b")
    await state.clear_ready("unknown")
    assert await state.ready_sessions() == ["a", "c"]
    await state.mark_ready("b")
    assert await state.ready_sessions() == ["a", "c", "b"]


# -- leases -----------------------------------------------------------------------------------


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


async def test_renew_extends_and_a_lapsed_lease_cannot_be_renewed(state: State) -> None:
    lease = await state.acquire_lease("s", "w", TTL)
    assert lease is not None
    for _ in range(3):
        await asyncio.sleep(TTL / 2)
        assert await state.renew_lease(lease, TTL) is True
    assert await state.lease_holder("s") == lease
    await asyncio.sleep(TTL + 0.1)
    assert await state.renew_lease(lease, TTL) is False
    assert await state.lease_holder("s") is None


async def test_release_by_a_non_holder_is_refused(state: State) -> None:
    lease = await state.acquire_lease("s", "w1", 60)
    assert lease is not None
    assert await state.release_lease(Lease("s", "w2", lease.token)) is False
    assert await state.release_lease(Lease("s", "w1", lease.token + 1)) is False
    assert await state.renew_lease(Lease("s", "w2", lease.token), 60) is False
    assert await state.lease_holder("s") == lease
    assert await state.release_lease(lease) is True


async def test_tokens_increase_across_releases(state: State) -> None:
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


async def test_check_fence_rejects_an_older_token(state: State) -> None:
    await state.check_fence("s", 10)
    await state.check_fence("s", 10)
    await state.check_fence("s", 12)
    with pytest.raises(StaleFencingToken):
        await state.check_fence("s", 11)
    await state.check_fence("other", 1)  # fences are per session


async def test_a_lost_lease_is_fenced_off_as_soon_as_a_newer_one_exists(state: State) -> None:
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


# -- interrupts -------------------------------------------------------------------------------


async def test_interrupt_requests_are_returned_oldest_first(state: State) -> None:
    await state.request_interrupt("s", "sig-1", "first")
    await state.request_interrupt("s", "sig-2", "second")
    assert await state.wait_interrupt("s", 1) == ("sig-1", "first")
    assert await state.wait_interrupt("s", 0) == ("sig-2", "second")
    assert await state.wait_interrupt("s", 0) is None


async def test_wait_interrupt_times_out_with_none(state: State) -> None:
    started = time.monotonic()
    assert await state.wait_interrupt("s", 0.15) is None
    assert time.monotonic() - started >= 0.1


async def test_a_waiter_is_woken_by_a_request_from_another_replica(backend: Backend) -> None:
    worker = backend.new()
    attention = backend.peer(worker)
    waiter = asyncio.create_task(worker.wait_interrupt("s", 10))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await attention.request_interrupt("s", "sig-9", "page the on-call")
    assert await asyncio.wait_for(waiter, 5) == ("sig-9", "page the on-call")


async def test_each_request_wakes_one_of_several_waiters(backend: Backend) -> None:
    first = backend.new()
    waiters = {asyncio.create_task(backend.peer(first).wait_interrupt("s", 5)) for _ in range(3)}
    await asyncio.sleep(0.1)
    await first.request_interrupt("s", "a", "r")
    await first.request_interrupt("s", "b", "r")
    results: list[tuple[str, str] | None] = []
    while len(results) < 2:
        done, waiters = await asyncio.wait(waiters, timeout=3, return_when="FIRST_COMPLETED")
        assert done, "a request woke no waiter"
        results += [task.result() for task in done]
    assert sorted(r[0] for r in results if r is not None) == ["a", "b"]
    assert len(waiters) == 1
    (last,) = waiters
    assert not last.done()
    last.cancel()
    with pytest.raises(asyncio.CancelledError):
        await last


# -- isolation --------------------------------------------------------------------------------


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


# -- backend specifics ------------------------------------------------------------------------


async def test_memory_dedupe_keys_are_bounded() -> None:
    state = MemoryState(max_dedupe_keys=3)
    for key in "abcd":
        assert await state.remember(key, 60) is True
    assert await state.remember("a", 60) is True  # the oldest was forgotten early
    assert await state.remember("d", 60) is False


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


async def test_memory_lease_expiry_follows_the_injected_clock() -> None:
    now = [100.0]
    state = MemoryState(clock=lambda: now[0])
    lease = await state.acquire_lease("s", "w", 30)
    assert lease is not None
    now[0] += 29.9
    assert await state.renew_lease(lease, 30) is True
    now[0] += 30.1
    assert await state.lease_holder("s") is None
    assert await state.remember("k", 5) is True
    now[0] += 5
    assert await state.remember("k", 5) is True


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[str, str]]:
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    yield url, prefix
    await delete_redis_keys(url, prefix)


async def test_redis_keys_expire_when_idle_but_tokens_keep_increasing(
    redis_prefix: tuple[str, str],
) -> None:
    from loom.state.redis import RedisState

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
    from loom.state.redis import RedisState

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
    from loom.state.redis import RedisState

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
    from loom.state.redis import RedisState

    url, prefix = redis_prefix
    state = RedisState(url, prefix=prefix)
    await state.start()
    assert await state.ping() is True
    await state.close()


# -- feedback ---------------------------------------------------------------------------------


async def test_feedback_is_read_newest_last_per_session_and_for_all(state: State) -> None:
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
    from loom.state.base import DEFAULT_MAX_SESSION_FEEDBACK

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
    from loom.state.redis import RedisState

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


# -- construction -----------------------------------------------------------------------------


def test_state_from_url() -> None:
    assert isinstance(state_from_url("memory://"), MemoryState)
    state = state_from_url("memory://", max_pending=7)
    assert state.max_pending == 7
    from loom.state.redis import RedisState

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


async def test_decision_context_reads_risks_lease_and_pending(state: State) -> None:
    context = await state.decision_context("s")
    assert (context.risks, context.busy, context.pending) == ({}, False, 0)
    await state.set_risk("s", "db", "database is down")
    await state.add_pending("s", "sig-1")
    lease = await state.acquire_lease("s", "worker-a", 5.0)
    assert lease is not None
    context = await state.decision_context("s")
    assert context.risks == {"db": "database is down"}
    assert context.busy is True
    assert context.pending == 1


async def test_record_signal_applies_every_effect(state: State) -> None:
    await state.record_signal(
        "s",
        decision_json='{"action": "interrupt"}',
        pending_json="sig-9",
        interrupt=("sig-9", "critical"),
        ready=True,
    )
    assert await state.pending("s") == ["sig-9"]
    assert await state.decisions("s") == ['{"action": "interrupt"}']
    assert await state.ready_sessions() == ["s"]
    assert await state.wait_interrupt("s", 0.5) == ("sig-9", "critical")
    await state.record_signal("t", decision_json='{"action": "drop"}')
    assert await state.pending("t") == []
    assert await state.decisions("t") == ['{"action": "drop"}']
    assert await state.ready_sessions() == ["s"]


async def test_claim_tells_the_owner_from_a_duplicate(state: State) -> None:
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


async def test_batched_reads_and_writes_match_the_single_ones(state: State) -> None:
    from loom.state.base import SignalRecord

    await state.add_pending("a", "sig-0")
    contexts = await state.decision_contexts(["a", "b", "a"])
    assert sorted(contexts) == ["a", "b"]
    assert (contexts["a"].pending, contexts["b"].pending) == (1, 0)
    await state.record_signals(
        [
            SignalRecord("a", '{"n": 1}', pending_json="sig-1", ready=True),
            SignalRecord("b", '{"n": 2}', pending_json="sig-2", interrupt=("sig-2", "now")),
            SignalRecord("a", '{"n": 3}'),
        ]
    )
    assert await state.pending("a") == ["sig-0", "sig-1"]
    assert await state.decisions("a") == ['{"n": 1}', '{"n": 3}']
    assert await state.ready_sessions() == ["a"]
    assert await state.wait_interrupt("b", 0.5) == ("sig-2", "now")
    holders = await state.claim_many([("k", "x", 5.0), ("k", "y", 5.0), ("j", "z", 5.0)])
    assert holders == [None, "x", None]


async def test_batched_records_keep_every_text_exactly(state: State) -> None:
    """The Redis batch travels as one JSON argument: quotes, escapes, non-ASCII and
    astral characters, and session ids with braces and colons come back byte for byte."""
    from loom.state.base import SignalRecord

    odd_session = 'thread:{C1}:"1700000000.0001" ✓'
    text = 'disk "full" \\ on host-ü 🚀 \n\t end'
    pending = json.dumps({"summary": text}, ensure_ascii=False)
    decision = json.dumps({"reason": text})
    await state.record_signals(
        [
            SignalRecord(odd_session, decision, pending_json=pending, ready=True),
            SignalRecord(odd_session, decision, interrupt=("sig-ü", text)),
        ]
    )
    assert await state.pending(odd_session) == [pending]
    assert await state.decisions(odd_session) == [decision, decision]
    assert await state.ready_sessions() == [odd_session]
    assert await state.wait_interrupt(odd_session, 0.5) == ("sig-ü", text)


# -- markers and held leases (scheduler, heartbeat) -------------------------------------------


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


async def test_redis_leases_index_is_pruned_and_expires(redis_prefix: tuple[str, str]) -> None:
    """``{prefix}:leases`` loses a dead worker's entry at the next acquire or release (not
    only when someone reads held_leases), and expires with the longest lease written to it."""
    from loom.state.redis import RedisState

    url, prefix = redis_prefix
    state = RedisState(url, prefix=prefix)
    raw, index = state._client, f"{prefix}:leases"
    try:
        dead = await state.acquire_lease("dead", "w1", TTL)  # never released: the worker died
        assert dead is not None
        assert 0 < await raw.pttl(index) <= _ms(TTL)
        await asyncio.sleep(TTL + 0.1)
        live = await state.acquire_lease("live", "w2", 30)
        assert live is not None
        assert await raw.zrange(index, 0, -1) == ["live"]
        assert _ms(TTL) < await raw.pttl(index) <= 30_000
        short = await state.acquire_lease("short", "w3", TTL)  # a shorter TTL keeps the longer
        assert short is not None
        assert await raw.pttl(index) > _ms(TTL)
        assert await state.renew_lease(live, 60) is True
        assert 30_000 < await raw.pttl(index) <= 60_000
        await asyncio.sleep(TTL + 0.1)
        assert await state.release_lease(live) is True
        assert await raw.exists(index) == 0  # "short" expired, "live" released: nothing left
        assert await raw.exists(f"{prefix}:s:{{live}}:leased_at") == 0
    finally:
        await state.close()


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
