"""Script calls made in one step of the event loop go to Redis together, in one pipeline.

The gateway's accept path calls two scripts per signal with a dedupe key (the claim before
the publish, the marker after the confirm). Under load, many requests make such a call in
the same step of the loop, and each call on its own took a pooled connection and paid
redis-py's per-command cost: together about as much CPU as the rest of the request.
``AutoPipeline.call`` queues the call instead; at the end of the step (or as soon as
``max_batch`` calls are queued) the queued calls go out together without a transaction
(each script is atomic on its own; calls of different requests need not be atomic
together): one write on one pooled connection, one round trip.

Each caller gets its own reply, or its own error: a call that cannot be encoded fails as
it is made, a script that fails (a wrong type) fails that caller alone, and a caller
cancelled before its batch goes out has its call left out of it. A failure of the
connection (Redis gone, a timeout) fails the callers whose replies had not been read when
it came, as it would have failed each of their calls on its own; the callers whose replies
were read before it get them. Like those calls a batch is never re-sent (``redis_connect``):
the calls that failed may or may not have run. The one exception is NOSCRIPT (Redis
restarted or its scripts were flushed): Redis ran nothing of that call, so the calls it
refused are sent again, once, as EVAL with the script's source, on the same connection
(which also caches the script for the next EVALSHA).

The batch is written and read on a pooled connection directly, each command encoded once
as it is queued: redis-py's pipelines ask Redis which scripts it knows before every
execution (a second round trip) and cost about as much CPU per batch as the calls did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_BATCH = 256
"""Calls sent in one round trip at most: the ones queued beyond it go out in the next."""

_Call = tuple[AsyncScript, int, bytes, "asyncio.Future[Any]"]
"""A queued call: its script, how many arguments follow the script (key count, keys,
arguments), those arguments encoded, its reply."""

CLOSE_WAIT = 5.0
"""Seconds ``close`` waits at least for the batches on their way (then cancels them)."""


def _bulk(encoding: str, errors: str, arguments: Sequence[str | int | bytes]) -> bytes:
    """The arguments as Redis protocol (RESP) bulk strings: a command is ``*<count>\\r\\n``
    followed by its arguments so."""
    parts: list[bytes] = []
    for argument in arguments:
        if isinstance(argument, bytes):
            data = argument
        elif isinstance(argument, str):
            data = argument.encode(encoding, errors)
        elif isinstance(argument, int) and not isinstance(argument, bool):
            data = b"%d" % argument
        else:
            raise TypeError(f"a Redis argument is a str, int or bytes, not {argument!r}")
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


class AutoPipeline:
    """Sends the script calls made in one step of the event loop in one round trip."""

    def __init__(self, client: aioredis.Redis, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._client = client
        self.max_batch = max_batch
        encoder = client.get_encoder()  # type: ignore[no-untyped-call]
        self._encoding: str = encoder.encoding
        self._errors: str = encoder.encoding_errors
        self._queued: list[_Call] = []
        self._heads: dict[tuple[str, str | bytes], bytes] = {}
        """Each script's command name and digest (or source), encoded: a script's calls
        all begin alike."""
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    async def call(
        self,
        script: AsyncScript,
        keys: Sequence[str | int | bytes],
        args: Sequence[str | int | bytes],
    ) -> Any:
        """The script's reply to ``keys`` and ``args``, sent with the other calls of this
        step of the loop; raises what the call raised (redis-py's exceptions).

        Keys and arguments are ``str``, ``int`` or ``bytes`` only (encoded here, once, as
        the call is queued; anything else raises ``TypeError``): unlike redis-py's own
        commands, floats and other values are not converted. After ``close`` a call is
        refused with redis-py's ``ConnectionError``, as a closed client's would be.
        """
        if self._closed:
            raise RedisConnectionError("the pipeline of script calls is closed")
        tail = _bulk(self._encoding, self._errors, (len(keys), *keys, *args))
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((script, len(keys) + len(args) + 1, tail, reply))
        if len(self._queued) >= self.max_batch:
            self._flush()
        return await reply

    def _flush(self) -> None:
        if not self._queued:
            return
        batch, self._queued = self._queued, []
        # A task of its own: a caller that is cancelled must not cancel its batch's others.
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        # A caller cancelled before its batch went out: its call is not sent at all (a
        # claim taken for nobody would hold its key until the claim expires).
        batch = [call for call in batch if not call[3].done()]
        if not batch:
            return
        try:
            outcomes = await self._execute(batch)
        except BaseException as problem:
            # Every caller is settled whatever ends the batch (none waits forever).
            for *_, reply in batch:
                if reply.done():
                    continue
                if isinstance(problem, Exception):
                    reply.set_exception(problem)
                else:
                    reply.cancel()
            if not isinstance(problem, Exception):
                raise
            return
        for (*_, reply), outcome in zip(batch, outcomes, strict=True):
            if reply.done():  # its caller was cancelled
                continue
            if isinstance(outcome, Exception):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)

    def _command(self, name: str, call: _Call) -> bytes:
        """The call as EVALSHA (naming the script by its digest) or EVAL (its source)."""
        script, count, tail, _ = call
        named = script.sha if name == "EVALSHA" else script.script
        if isinstance(named, memoryview):
            named = bytes(named)
        head = self._heads.get((name, named))
        if head is None:  # the same for every call of the script: encoded once
            head = self._heads[name, named] = _bulk(self._encoding, self._errors, (name, named))
        return b"*%d\r\n" % (count + 2) + head + tail

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        """Each call's outcome, in order: its reply, its own error (a ``ResponseError``),
        or the connection's failure when the connection failed before its reply was read."""
        pool = self._client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            commands = [self._command("EVALSHA", call) for call in batch]
            replies, failure = await _round_trip(connection, commands)
            outcomes = _settled(replies, failure, len(batch))
            refused = [at for at, answer in enumerate(replies) if isinstance(answer, NoScriptError)]
            if refused and failure is None:
                # Redis ran none of these: sent again as EVAL, on this same connection (a
                # second one may not be free, or under Sentinel may reach another server);
                # EVAL also caches the script for the next EVALSHA.
                again = [self._command("EVAL", batch[at]) for at in refused]
                replies, failure = await _round_trip(connection, again)
                for at, outcome in zip(
                    refused, _settled(replies, failure, len(again)), strict=True
                ):
                    outcomes[at] = outcome
            elif refused:
                for at in refused:  # not sent again on a connection that failed
                    outcomes[at] = failure
            return outcomes
        finally:
            await pool.release(connection)

    async def close(self) -> None:
        """Refuse new calls, send what is queued and wait for the batches on their way,
        ``CLOSE_WAIT`` seconds at most (or the client's socket timeout, when longer): the
        callers of a batch still unanswered then are cancelled."""
        self._closed = True
        self._flush()
        if not self._sending:
            return
        timeout = self._client.connection_pool.connection_kwargs.get("socket_timeout")
        bound = max(CLOSE_WAIT, timeout or 0.0)
        _, pending = await asyncio.wait(set(self._sending), timeout=bound)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _settled(replies: list[Any], failure: Exception | None, count: int) -> list[Any]:
    """An outcome for each of ``count`` calls: the replies read, then the failure."""
    return [*replies, *([failure] * (count - len(replies)))]


async def _round_trip(
    connection: AbstractConnection, commands: list[bytes]
) -> tuple[list[Any], Exception | None]:
    """Write the commands at once, then read a reply for each: the replies read (a script's
    error among them), and the failure of the connection that stopped the reading, if one
    did (the connection then closes itself: no reply left unread for its next user)."""
    replies: list[Any] = []
    try:
        await connection.send_packed_command(b"".join(commands))
        await _read_replies(connection, len(commands), replies)
    except Exception as failure:
        return replies, failure
    return replies, None


async def _read_replies(connection: AbstractConnection, count: int, replies: list[Any]) -> None:
    """Read ``count`` replies into ``replies`` (a script's error as its reply), each within
    the connection's socket timeout of the one before, as redis-py bounds each read, but
    with one timer for the batch, moved on at each reply: redis-py arms and disarms a timer
    of its own for every read, which cost as much as the rest of the read. While the timer
    here bounds the reads the connection's own timeout is off; it is restored after."""
    limit = connection.socket_timeout
    loop = asyncio.get_running_loop()
    connection.socket_timeout = None
    try:
        async with asyncio.timeout(limit) as deadline:
            for _ in range(count):
                try:
                    replies.append(await connection.read_response())
                except ResponseError as error:
                    replies.append(error)
                if limit is not None:
                    deadline.reschedule(loop.time() + limit)
    except TimeoutError as late:
        # What redis-py raises for a read past its socket timeout. redis-py closes the
        # connection when the timer interrupts its read; closed here too, so a late reply
        # can never reach the next caller of a pooled connection whatever redis-py does.
        await connection.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout reading from Redis") from late
    finally:
        connection.socket_timeout = limit


__all__ = ["CLOSE_WAIT", "MAX_BATCH", "AutoPipeline"]
