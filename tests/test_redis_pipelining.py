"""The accept path's Redis calls made in one loop step go out in one pipeline
(``loom.state.redis_pipelining``), each caller with its own answer; on a private Redis, so
its command counts, its scripts and its outages are this test's alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from loom.state import redis_pipelining
from loom.state.base import StateUnavailable
from loom.state.redis_pipelining import AutoPipeline
from loom.state.redis_state import RedisState
from tests.polling import eventually
from tests.private_redis import PrivateRedis

TTL = 30.0


@pytest.fixture
async def admin(redis_server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    """A client of its own, for reading the server's counts and setting keys up."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def count_writes(client: aioredis.Redis) -> list[int]:
    """The client's connections count each write that carries a script call (EVALSHA):
    ``[writes, calls in them]``. One write is one round trip."""
    counts = [0, 0]
    pool = client.connection_pool
    base: Any = pool.connection_class

    class Counting(base):  # type: ignore[misc, valid-type]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            chunks = [command] if isinstance(command, bytes | str) else list(command)
            data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
            if b"EVALSHA" in data:
                counts[0] += 1
                counts[1] += data.count(b"EVALSHA")
            await super().send_packed_command(command, check_health)

    pool.connection_class = Counting
    return counts


async def evalsha_calls(admin: aioredis.Redis) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_claims_go_in_one_round_trip_each_with_its_own_answer(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(redis_server.url, prefix="t")
    writes = count_writes(state._client)
    try:
        # Set up: keys 0-4 accepted before, 5-9 being accepted by someone else, 10-19 free.
        for i in range(5):
            await admin.set(f"t:marker:accepted:k{i}", f"first-{i}")
        for i in range(5, 10):
            await admin.set(f"t:dedupe:accepting:k{i}", f"other-{i}", px=30_000)
        # Redis learns both scripts (a first call meets NOSCRIPT and is sent again).
        await state.claim_unless_marked("accepted:w", "accepting:w", "w", TTL)
        await state.mark_and_release("accepted:w", "w", TTL, "accepting:w", "w")
        before_writes, before_calls = writes[0], await evalsha_calls(admin)

        taken = await asyncio.gather(
            *(
                state.claim_unless_marked(f"accepted:k{i}", f"accepting:k{i}", f"sig-{i}", TTL)
                for i in range(20)
            ),
            # the same free key twice in one batch: the first claims it, the second meets it
            state.claim_unless_marked("accepted:k10", "accepting:k10", "late", TTL),
        )

        assert writes[0] - before_writes == 1  # 21 calls, one write: one round trip
        # ... and one script call, which ran each of them once, in order
        assert await evalsha_calls(admin) - before_calls == 1
        assert taken[:5] == [("marked", f"first-{i}") for i in range(5)]
        assert taken[5:10] == [("claimed", f"other-{i}") for i in range(5, 10)]
        assert taken[10:20] == [None] * 10
        assert taken[20] == ("claimed", "sig-10")
        for i in range(10, 20):
            assert await admin.get(f"t:dedupe:accepting:k{i}") == f"sig-{i}"

        # The markers, likewise batched: each releases its own claim only.
        before_writes = writes[0]
        await asyncio.gather(
            *(
                state.mark_and_release(f"accepted:k{i}", f"sig-{i}", TTL, f"accepting:k{i}", s)
                for i, s in ((i, f"sig-{i}") for i in range(10, 20))
            ),
            state.mark_and_release("accepted:k5", "sig-5", TTL, "accepting:k5", "sig-5"),
        )
        assert writes[0] - before_writes == 1
        assert await evalsha_calls(admin) - before_calls == 2
        for i in range(10, 20):
            assert await admin.get(f"t:marker:accepted:k{i}") == f"sig-{i}"
            assert await admin.get(f"t:dedupe:accepting:k{i}") is None
        assert await admin.get("t:dedupe:accepting:k5") == "other-5"  # not its claim
    finally:
        await state.close()


async def test_a_batch_is_bounded(redis_server: PrivateRedis, admin: aioredis.Redis) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    writes = count_writes(client)
    script = client.register_script("return ARGV[1]")
    pipeline = AutoPipeline(client, max_batch=8)
    try:
        await client.script_load(script.script)
        answers = await asyncio.gather(*(pipeline.call(script, [], [i]) for i in range(20)))
        assert answers == [str(i) for i in range(20)]
        assert writes == [3, 20]  # 8 + 8 + 4
        with pytest.raises(ValueError, match="max_batch"):
            AutoPipeline(client, max_batch=0)
    finally:
        await pipeline.close()
        await client.aclose()


async def test_a_script_error_fails_its_caller_alone(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(redis_server.url, prefix="t")
    try:
        await admin.rpush("t:marker:accepted:bad", "not a string")  # GET on it: WRONGTYPE
        taken = await asyncio.gather(
            state.claim_unless_marked("accepted:a", "accepting:a", "sig-a", TTL),
            state.claim_unless_marked("accepted:bad", "accepting:bad", "sig-bad", TTL),
            state.claim_unless_marked("accepted:b", "accepting:b", "sig-b", TTL),
            return_exceptions=True,
        )
        assert taken[0] is None
        assert taken[2] is None
        assert isinstance(taken[1], ResponseError)
        assert "WRONGTYPE" in str(taken[1])
        assert await admin.get("t:dedupe:accepting:bad") is None

        # A key that cannot be encoded (half a character) fails its own call, as it is made.
        taken = await asyncio.gather(
            state.claim_unless_marked("accepted:c", "accepting:c", "sig-c", TTL),
            state.claim_unless_marked("accepted:\ud800", "accepting:\ud800", "sig-d", TTL),
            return_exceptions=True,
        )
        assert taken[0] is None
        assert isinstance(taken[1], UnicodeEncodeError)
    finally:
        await state.close()


async def test_scripts_flushed_from_redis_are_loaded_again(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(redis_server.url, prefix="t")
    try:
        assert await state.claim_unless_marked("accepted:x", "accepting:x", "sig-x", TTL) is None
        await admin.script_flush()  # as after a restart without persistence of scripts
        taken = await asyncio.gather(
            *(state.claim_unless_marked(f"accepted:{k}", f"accepting:{k}", "s", TTL) for k in "xyz")
        )
        assert taken == [("claimed", "sig-x"), None, None]
        await state.mark_and_release("accepted:y", "s", TTL, "accepting:y", "s")
        assert await admin.get("t:marker:accepted:y") == "s"
    finally:
        await state.close()


async def test_redis_gone_mid_batch_fails_every_caller_and_claims_no_success(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(f"{redis_server.url}?socket_timeout=0.5", prefix="t")
    try:
        await admin.set("t:marker:accepted:done", "first")
        assert await state.ping()
        redis_server.freeze()  # the batch is written; its answers never come
        taken = await asyncio.gather(
            *(
                state.claim_unless_marked(f"accepted:{k}", f"accepting:{k}", f"sig-{k}", TTL)
                for k in ("a", "b", "done")
            ),
            return_exceptions=True,
        )
        assert all(isinstance(t, StateUnavailable) for t in taken), taken
        redis_server.thaw()  # Redis now runs what it had read: the claims may have landed
        # A retry meets a claim (a 503, "send it again") or the earlier marker, never a
        # marker of the failed calls: nothing failed was taken as accepted.
        again = await asyncio.gather(
            *(
                state.claim_unless_marked(f"accepted:{k}", f"accepting:{k}", f"retry-{k}", TTL)
                for k in ("a", "b", "done")
            )
        )
        assert again[0] in (None, ("claimed", "sig-a"))
        assert again[1] in (None, ("claimed", "sig-b"))
        assert again[2] == ("marked", "first")
        assert await admin.get("t:marker:accepted:a") is None
        assert await admin.get("t:marker:accepted:b") is None
    finally:
        redis_server.thaw()
        await state.close()


async def test_redis_killed_fails_every_caller_of_the_batch(
    redis_server: PrivateRedis,
) -> None:
    state = RedisState(redis_server.url, prefix="t")
    try:
        assert await state.ping()
        redis_server.kill()
        taken = await asyncio.gather(
            *(
                state.claim_unless_marked(f"accepted:{i}", f"accepting:{i}", "s", TTL)
                for i in "abcde"
            ),
            state.mark_and_release("accepted:m", "s", TTL, "accepting:m", "s"),
            return_exceptions=True,
        )
        assert all(isinstance(t, StateUnavailable) for t in taken), taken
        redis_server.start()  # and the next batch goes through again
        assert await state.claim_unless_marked("accepted:1", "accepting:1", "s", TTL) is None
    finally:
        await state.close()


async def eval_calls(admin: aioredis.Redis) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


def writes_seen(client: aioredis.Redis) -> asyncio.Event:
    """Set once a write of script calls has gone out on one of the client's connections."""
    written = asyncio.Event()
    pool = client.connection_pool
    base: Any = pool.connection_class

    class Watched(base):  # type: ignore[misc, valid-type]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            await super().send_packed_command(command, check_health)
            if isinstance(command, bytes) and b"EVALSHA" in command:
                written.set()

    pool.connection_class = Watched
    return written


async def test_a_caller_cancelled_before_its_batch_goes_out_has_no_call_sent(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(redis_server.url, prefix="t")
    try:
        await state.claim_unless_marked("accepted:w", "accepting:w", "w", TTL)  # scripts known
        before = await evalsha_calls(admin)
        gone = asyncio.ensure_future(
            state.claim_unless_marked("accepted:a", "accepting:a", "sig-a", TTL)
        )
        kept = asyncio.ensure_future(
            state.claim_unless_marked("accepted:b", "accepting:b", "sig-b", TTL)
        )
        await asyncio.sleep(0)  # both queued; their batch not sent yet
        gone.cancel()
        assert await kept is None
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert await admin.get("t:dedupe:accepting:a") is None  # no claim taken for nobody
        assert await admin.get("t:dedupe:accepting:b") == "sig-b"
        assert await evalsha_calls(admin) - before == 1

        # A batch of cancelled callers only is not sent at all.
        gone = asyncio.ensure_future(
            state.claim_unless_marked("accepted:c", "accepting:c", "sig-c", TTL)
        )
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        await state._batched.close()  # waits for the batch task, which sends nothing
        assert await evalsha_calls(admin) - before == 1
        assert await admin.get("t:dedupe:accepting:c") is None
    finally:
        await state.close()


async def test_a_caller_cancelled_mid_batch_leaves_the_others_and_the_connection_sound(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    # One connection: the next call after the batch reads from the very same one.
    client = aioredis.Redis.from_url(f"{redis_server.url}?max_connections=1", decode_responses=True)
    written = writes_seen(client)
    echo = client.register_script("return ARGV[1]")
    pipeline = AutoPipeline(client)
    try:
        await client.script_load(echo.script)
        calls = [asyncio.ensure_future(pipeline.call(echo, [], [f"r{i}"])) for i in range(3)]
        await written.wait()  # the batch is on its way, its replies unread
        calls[1].cancel()
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert answers[0] == "r0"
        assert isinstance(answers[1], asyncio.CancelledError)
        assert answers[2] == "r2"
        # The cancelled caller's reply was read too: the next user of the connection
        # gets its own reply, not the one left behind.
        assert await pipeline.call(echo, [], ["next"]) == "next"
        assert await client.get("nothing-here") is None
    finally:
        await pipeline.close()
        await client.aclose()


async def test_replies_read_before_a_failure_are_delivered(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(f"{redis_server.url}?socket_timeout=0.3", prefix="t")
    # Holds Redis for much longer than the timeout. Its padding makes it longer than what
    # Redis reads of a connection at once (16 KiB): Redis runs and answers the call before
    # it, then reads the rest of this one, so that reply is on its way when this one stalls.
    stall = state._client.register_script(
        "local t = tonumber(redis.call('TIME')[1])"
        " while tonumber(redis.call('TIME')[1]) < t + 2 do end return 'late'"
    )
    try:
        await state._client.script_load(stall.script)
        await state.claim_unless_marked("accepted:w", "accepting:w", "w", TTL)  # scripts known
        # Sent in the order queued: the claims (one script call, in the place of the
        # first), the stall, then the marker.
        taken = await asyncio.gather(
            state.claim_unless_marked("accepted:a", "accepting:a", "sig-a", TTL),
            state._batched.call(stall, [], ["x" * 40_000]),
            state.claim_unless_marked("accepted:b", "accepting:b", "sig-b", TTL),
            state.mark_and_release("accepted:w", "w", TTL, "accepting:w", "w"),
            return_exceptions=True,
        )
        # The claims landed and their reply was read: each caller has its answer.
        assert taken[0] is None
        assert taken[2] is None
        assert isinstance(taken[1], redis.exceptions.TimeoutError), taken[1]
        assert isinstance(taken[3], StateUnavailable), taken[3]  # ran, or not: unknown
        assert await admin.get("t:dedupe:accepting:a") == "sig-a"
        assert await admin.get("t:dedupe:accepting:b") == "sig-b"
    finally:
        await state.close()


async def test_a_batch_past_the_socket_timeout_leaves_the_connection_sound(
    redis_server: PrivateRedis,
) -> None:
    # One connection, so the calls after the batch use the very one that timed out.
    url = f"{redis_server.url}?max_connections=1&socket_timeout=0.3"
    client = aioredis.Redis.from_url(url, decode_responses=True)
    echo = client.register_script("return ARGV[1]")
    stall = client.register_script(  # holds Redis past the timeout, then answers
        "local t = tonumber(redis.call('TIME')[1])"
        " while tonumber(redis.call('TIME')[1]) < t + 2 do end return 'late'"
    )
    pipeline = AutoPipeline(client)
    try:
        await client.script_load(echo.script)
        await client.script_load(stall.script)
        answers = await asyncio.gather(
            pipeline.call(stall, [], []), pipeline.call(echo, [], ["after"]),
            return_exceptions=True,
        )  # fmt: skip
        assert isinstance(answers[0], redis.exceptions.TimeoutError), answers[0]
        assert isinstance(answers[1], redis.exceptions.TimeoutError), answers[1]
        # The late replies are never read as anyone's: the connection was closed, and the
        # next calls (once Redis is free again) get their own answers on a new one.
        for attempt in range(100):
            try:
                assert await pipeline.call(echo, [], [f"next-{attempt}"]) == f"next-{attempt}"
                break
            except redis.exceptions.TimeoutError:  # Redis still runs the stalled script
                await asyncio.sleep(0.1)
        else:
            pytest.fail("Redis never answered again")
        assert await pipeline.call(echo, [], ["again"]) == "again"
        assert await client.get("nothing-here") is None
        # Its own timeout is the connection's again (the batch's reads set it aside).
        [connection] = [*client.connection_pool._available_connections]
        assert connection.socket_timeout == 0.3
    finally:
        await pipeline.close()
        await client.aclose()


async def test_scripts_refused_are_sent_again_as_eval_each_call_once(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    count = client.register_script("return redis.call('INCR', KEYS[1])")
    other = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    pipeline = AutoPipeline(client)
    try:
        await client.script_load(count.script)  # Redis knows one of the two scripts
        await admin.config_resetstat()
        answers = await asyncio.gather(
            pipeline.call(count, ["n1"], []),
            pipeline.call(other, ["n2"], [10]),
            pipeline.call(count, ["n1"], []),
            pipeline.call(other, ["n2"], [5]),
        )
        assert list(answers) == [1, 10, 2, 15]
        assert await evalsha_calls(admin) == 4  # one batch of four
        assert await eval_calls(admin) == 2  # the two refused, each sent once more
        # EVAL cached the script: the next call of it is an EVALSHA that runs.
        assert await pipeline.call(other, ["n2"], [1]) == 16
        assert await evalsha_calls(admin) == 5
        assert await eval_calls(admin) == 2
    finally:
        await pipeline.close()
        await client.aclose()


async def test_one_connection_recovers_from_a_script_flush(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(f"{redis_server.url}?max_connections=1", prefix="t")
    try:
        assert await state.claim_unless_marked("accepted:x", "accepting:x", "sig-x", TTL) is None
        await admin.script_flush()
        taken = await asyncio.gather(
            state.claim_unless_marked("accepted:x", "accepting:x", "s", TTL),
            state.claim_unless_marked("accepted:y", "accepting:y", "sig-y", TTL),
        )
        assert list(taken) == [("claimed", "sig-x"), None]
        await state.mark_and_release("accepted:y", "sig-y", TTL, "accepting:y", "sig-y")
        assert await admin.get("t:marker:accepted:y") == "sig-y"
    finally:
        await state.close()


async def test_close_sends_what_is_queued_and_refuses_calls_after(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(redis_server.url, prefix="t")
    await state.claim_unless_marked("accepted:w", "accepting:w", "w", TTL)  # scripts known
    queued = [
        asyncio.ensure_future(state.claim_unless_marked(f"accepted:{k}", f"accepting:{k}", k, TTL))
        for k in "abc"
    ]
    await asyncio.sleep(0)  # queued, not sent yet
    await state.close()
    assert await asyncio.gather(*queued) == [None, None, None]
    for k in "abc":
        assert await admin.get(f"t:dedupe:accepting:{k}") == k
    with pytest.raises(StateUnavailable, match="closed"):
        await state.claim_unless_marked("accepted:d", "accepting:d", "d", TTL)
    assert await admin.get("t:dedupe:accepting:d") is None


async def test_close_is_bounded_without_a_socket_timeout(
    redis_server: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pipelining, "CLOSE_WAIT", 0.2)
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)  # no timeout
    echo = client.register_script("return ARGV[1]")
    pipeline = AutoPipeline(client)
    try:
        await client.script_load(echo.script)
        redis_server.freeze()  # the batch is written; its reply never comes
        waiting = asyncio.ensure_future(pipeline.call(echo, [], ["x"]))
        await asyncio.sleep(0)
        # Without a bound, close would wait for the reply for ever (the test's own
        # limit turns that into a failure rather than a hang).
        await asyncio.wait_for(pipeline.close(), timeout=60)
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        redis_server.thaw()
        await client.aclose()


# -- each scripts (call_each): one script call for the calls of one step ----------------

ECHO_EACH = """
local out = {}
for i = 1, #KEYS do out[i] = KEYS[i] .. '=' .. ARGV[i] end
return out
"""
"""An each script of one key and one argument per call: answers ``key=argument`` each."""


async def test_claims_and_markers_of_one_step_with_mixed_answers_and_an_error(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    state = RedisState(redis_server.url, prefix="t")
    writes = count_writes(state._client)
    try:
        await admin.set("t:marker:accepted:done", "first")
        await admin.set("t:dedupe:accepting:busy", "other", px=30_000)
        await admin.rpush("t:dedupe:accepting:bad", "a list")  # its claim's GET: WRONGTYPE
        await admin.rpush("t:dedupe:accepting:bad2", "a list")
        await state.claim_unless_marked("accepted:w", "accepting:w", "w", TTL)  # scripts known
        await state.mark_and_release("accepted:w", "w", TTL, "accepting:w", "w")
        before_writes, before_calls = writes[0], await evalsha_calls(admin)

        # Claims and markers of one step: one write, one script call of each kind.
        answers = await asyncio.gather(
            state.claim_unless_marked("accepted:fresh", "accepting:fresh", "sig-1", TTL),
            state.claim_unless_marked("accepted:done", "accepting:done", "sig-2", TTL),
            state.claim_unless_marked("accepted:bad", "accepting:bad", "sig-3", TTL),
            state.claim_unless_marked("accepted:busy", "accepting:busy", "sig-4", TTL),
            state.mark_and_release("accepted:w", "w2", TTL, "accepting:w", "w2"),
            state.mark_and_release("accepted:bad2", "sig-5", TTL, "accepting:bad2", "sig-5"),
            state.claim_unless_marked("accepted:fresh", "accepting:fresh", "sig-6", TTL),
            return_exceptions=True,
        )
        assert writes[0] - before_writes == 1
        assert await evalsha_calls(admin) - before_calls == 2
        assert answers[0] is None
        assert answers[1] == ("marked", "first")
        assert isinstance(answers[2], ResponseError)
        assert "WRONGTYPE" in str(answers[2])
        assert answers[3] == ("claimed", "other")
        assert answers[4] is None
        # The marker was set before its claim's GET failed, as the script of one call did.
        assert isinstance(answers[5], ResponseError)
        assert "WRONGTYPE" in str(answers[5])
        assert answers[6] == ("claimed", "sig-1")  # after the first of the batch, in order
        assert await admin.get("t:dedupe:accepting:fresh") == "sig-1"
        assert await admin.get("t:dedupe:accepting:done") is None
        assert await admin.get("t:dedupe:accepting:busy") == "other"
        assert await admin.get("t:marker:accepted:w") == "w2"
        assert await admin.get("t:marker:accepted:bad2") == "sig-5"
    finally:
        await state.close()


async def test_each_calls_are_sent_in_the_order_queued_beside_single_calls(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    writes = count_writes(client)
    each = client.register_script(ECHO_EACH)
    count = client.register_script("return redis.call('INCR', KEYS[1])")
    pipeline = AutoPipeline(client)
    try:
        await client.script_load(each.script)
        await client.script_load(count.script)

        async def call_each(key: str, argument: str | int | bytes) -> Any:
            return await pipeline.call_each(each, [key], [argument])

        # Coroutines all, so the calls are made in this order, in one step.
        answers = await asyncio.gather(
            pipeline.call(count, ["n"], []),
            call_each("a", 1),
            pipeline.call(count, ["n"], []),
            call_each("b", "x"),
            call_each("c", b"y"),
        )
        # The each script's call went in the place of its first call: before the second INCR.
        assert list(answers) == [1, "a=1", 2, "b=x", "c=y"]
        assert writes == [1, 3]  # one write: the two single calls and one of the each script
    finally:
        await pipeline.close()
        await client.aclose()


async def test_an_each_script_that_fails_whole_fails_each_of_its_callers(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    failing = client.register_script("return redis.error_reply('ERR broken')")
    short = client.register_script("return {1}")  # one reply for however many calls
    echo = client.register_script("return ARGV[1]")
    pipeline = AutoPipeline(client)
    try:
        for script in (failing, short, echo):
            await client.script_load(script.script)
        answers = await asyncio.gather(
            pipeline.call_each(failing, ["a"], [1]),
            pipeline.call_each(failing, ["b"], [2]),
            pipeline.call_each(short, ["c"], [3]),
            pipeline.call_each(short, ["d"], [4]),
            pipeline.call(echo, [], ["alone"]),
            return_exceptions=True,
        )
        assert [str(a) for a in answers[:2]] == ["broken", "broken"]
        assert all(isinstance(a, ResponseError) for a in answers[:4]), answers
        assert "answered [1], not one reply each" in str(answers[2])
        assert answers[3] is answers[2]
        assert answers[4] == "alone"  # the other calls of the batch are not theirs
    finally:
        await pipeline.close()
        await client.aclose()


async def test_a_caller_cancelled_before_its_batch_goes_out_is_left_out_of_its_each_call(
    redis_server: PrivateRedis, admin: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    claim = client.register_script(
        "local out = {} for i = 1, #KEYS do"
        " redis.call('SET', KEYS[i], ARGV[i]) out[i] = i end return out"
    )
    pipeline = AutoPipeline(client)
    try:
        await client.script_load(claim.script)
        calls = [pipeline.call_each(claim, [f"each:{k}"], [k]) for k in "abc"]
        calls[1].cancel()
        assert await calls[0] == 1
        assert await calls[2] == 2  # the script saw two calls: b was not sent
        assert await admin.get("each:b") is None
        assert [await admin.get("each:a"), await admin.get("each:c")] == ["a", "c"]
        await pipeline.close()
        with pytest.raises(RedisConnectionError):
            pipeline.call_each(claim, ["each:d"], ["d"])  # refused at once, once closed
        with pytest.raises(TypeError):
            AutoPipeline(client).call_each(claim, ["each:e"], [1.5])  # type: ignore[list-item]
    finally:
        await pipeline.close()
        await client.aclose()


# -- calls held while a batch is on its way --------------------------------------------


async def written(writes: list[int], count: int) -> None:
    """Wait until ``count`` writes of script calls went out (``count_writes``)."""

    async def enough() -> bool:
        return writes[0] >= count

    await eventually(enough, f"{count} writes", timeout=10)


@contextlib.asynccontextmanager
async def frozen_each(
    redis_server: PrivateRedis, *, max_batch: int = 256, connections: int = 1
) -> AsyncIterator[tuple[list[int], Any, AutoPipeline]]:
    """(``count_writes``, the echo each script loaded, a pipeline) on a private Redis that
    is frozen once ``connections`` pooled connections are made (a frozen Redis would not
    answer a new one's greeting); thawed and closed after."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    writes = count_writes(client)
    each = client.register_script(ECHO_EACH)
    pipeline = AutoPipeline(client, max_batch=max_batch)
    try:
        await client.script_load(each.script)
        await asyncio.gather(*(client.ping() for _ in range(connections)))
        assert len(client.connection_pool._available_connections) == connections
        redis_server.freeze()
        yield writes, each, pipeline
    finally:
        redis_server.thaw()
        await pipeline.close()
        await client.aclose()


async def test_calls_made_while_a_batch_is_on_its_way_go_together_once_it_is_answered(
    redis_server: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pipelining, "HOLD", 60.0)  # held until the answer, here
    async with frozen_each(redis_server) as (writes, each, pipeline):
        first = pipeline.call_each(each, ["first"], [0])
        await written(writes, 1)
        later = []
        for i in range(1, 4):  # one call in each of three steps of the loop
            later.append(pipeline.call_each(each, [f"k{i}"], [i]))
            await asyncio.sleep(0.01)
        assert writes == [1, 1]  # held back: the batch before is not answered yet
        redis_server.thaw()
        assert await first == "first=0"
        assert await asyncio.gather(*later) == ["k1=1", "k2=2", "k3=3"]
        assert writes == [2, 2]  # the three went together, as one call of the script


async def test_calls_are_held_for_a_slow_batch_a_bounded_time(
    redis_server: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pipelining, "HOLD", 0.05)
    async with frozen_each(redis_server, connections=2) as (writes, each, pipeline):
        first = pipeline.call_each(each, ["first"], [0])
        await written(writes, 1)
        second = pipeline.call_each(each, ["second"], [1])
        await written(writes, 2)  # once held HOLD, while the first is unanswered
        assert writes == [2, 2]
        assert not first.done()
        redis_server.thaw()
        assert [await first, await second] == ["first=0", "second=1"]


async def test_a_full_batch_goes_at_once_while_another_is_on_its_way(
    redis_server: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pipelining, "HOLD", 60.0)
    async with frozen_each(redis_server, max_batch=4, connections=2) as (writes, each, pipeline):
        first = pipeline.call_each(each, ["first"], [0])
        await written(writes, 1)
        full = [pipeline.call_each(each, [f"k{i}"], [i]) for i in range(5)]
        await written(writes, 2)  # four of them go at once; the fifth is held
        await asyncio.sleep(0.05)
        assert writes == [2, 2]
        redis_server.thaw()
        assert await first == "first=0"
        assert await asyncio.gather(*full) == [f"k{i}={i}" for i in range(5)]
        assert writes == [3, 3]
