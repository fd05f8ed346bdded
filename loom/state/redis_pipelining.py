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

Two things make the batches fewer and cheaper (issue 20: the accept path with a dedupe key):

- ``AutoPipeline.call_each``, for a script written to run many calls in one (an "each"
  script): the calls of such a script queued for one batch go out as ONE call of it (in the
  place of the first of them), their keys one after the other, then their arguments, and
  its reply (an array, one reply per call, in order) is handed out among them. Redis runs
  one script, and redis-py reads and parses one reply instead of one per call (its
  per-reply cost was about a third of a batched call's). Each caller still gets its own
  reply, or its own error: an each script catches a failing command (``redis.pcall``) and
  answers that call's error in its place, so it fails that caller alone, as a script of
  its own would have; a failure of the whole call (the connection's, an answer that is not one
  reply per call) is every one of its callers'; a NOSCRIPT sends the whole call again as
  EVAL, as above.
- While a batch is on its way, the calls made meanwhile are held back and go together as
  soon as it is answered (one batch instead of one per step of the loop), or after
  ``HOLD`` (5 ms) when it is slow to answer, or at once when ``max_batch`` are queued.
  Each batch costs a write, a read and a wake-up of the loop, in the kernel and in
  redis-py, whatever it carries; a call held waits for the round trip under way, and
  ``HOLD`` at most, before it goes out.
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

_Command = tuple[AsyncScript, int, bytes]
"""A command of a batch: its script, how many arguments follow the script, those
arguments encoded."""

_Part = tuple[int, bytes, int, bytes, "asyncio.Future[Any]"]
"""A queued call of an each script (``call_each``): how many keys it has, its keys
encoded, how many arguments, its arguments encoded, its reply."""

_Group = tuple[AsyncScript, list[_Part]]
"""The calls of an each script queued in one step, in order."""

_Replies = asyncio.Future[Any] | list[asyncio.Future[Any]]
"""Where a command's reply goes: to its caller, or (an each script's merged call) one
element to each of its callers."""

HOLD = 0.005
"""Seconds calls queued while a batch is on its way wait for its answer at most before
they go in a batch of their own."""

CLOSE_WAIT = 5.0
"""Seconds ``close`` waits at least for the batches on their way (then cancels them)."""


def _bulk(encoding: str, errors: str, arguments: Sequence[str | int | bytes]) -> bytes:
    """The arguments as Redis protocol (RESP) bulk strings: a command is ``*<count>\\r\\n``
    followed by its arguments so."""
    parts: list[bytes] = []
    for argument in arguments:
        if isinstance(argument, str):  # most of them: tested first
            data = argument.encode(encoding, errors)
        elif isinstance(argument, bytes):
            data = argument
        elif isinstance(argument, int) and not isinstance(argument, bool):
            data = b"%d" % argument
        else:
            raise TypeError(f"a Redis argument is a str, int or bytes, not {argument!r}")
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
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
        self._queued: list[_Call | _Group] = []
        """The calls queued, in order; the calls of an each script queued in this step are
        one group, in the place of its first."""
        self._groups: dict[AsyncScript, list[_Part]] = {}
        """The calls of each script queued by ``call_each``, by script."""
        self._count = 0
        """Calls queued (by ``call`` and ``call_each``) since the last flush."""
        self._heads: dict[tuple[str, str | bytes], bytes] = {}
        """Each script's command name and digest (or source), encoded: a script's calls
        all begin alike."""
        self._sending: set[asyncio.Task[None]] = set()
        self._hold: asyncio.TimerHandle | None = None
        """Sends the calls held back (``_flush``) once they have waited ``HOLD``."""
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
        if not self._count:
            loop.call_soon(self._flush)
        self._queued.append((script, len(keys) + len(args) + 1, tail, reply))
        self._count += 1
        if self._count >= self.max_batch:
            self._flush(full=True)
        return await reply

    def call_each(
        self,
        script: AsyncScript,
        keys: Sequence[str | int | bytes],
        args: Sequence[str | int | bytes],
    ) -> asyncio.Future[Any]:
        """Like ``call``, for an each script: the calls of ``script`` queued in this step
        go out as one call of it, with all their keys (in order), then all their
        arguments, and each caller gets its own element of the array it answers (an error
        element raised as a ``ResponseError``). Each of its calls must have as many keys
        and arguments as the script takes per call: it cannot tell them apart otherwise.

        The call is queued (or refused) at once; what it returns is its reply's future,
        to await (a coroutine of its own would cost a frame more at every step).
        """
        if self._closed:
            raise RedisConnectionError("the pipeline of script calls is closed")
        encoded_keys = _bulk(self._encoding, self._errors, keys)
        encoded_args = _bulk(self._encoding, self._errors, args)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._count:
            loop.call_soon(self._flush)
        parts = self._groups.get(script)
        if parts is None:
            parts = self._groups[script] = []
            self._queued.append((script, parts))
        parts.append((len(keys), encoded_keys, len(args), encoded_args, reply))
        self._count += 1
        if self._count >= self.max_batch:
            self._flush(full=True)
        return reply

    def _flush(self, full: bool = False) -> None:
        """Send what is queued, in a batch of its own; while a batch is on its way, only
        when ``full`` (``max_batch`` calls queued), closing, or held for ``HOLD``."""
        if not self._count:
            return
        loop = asyncio.get_running_loop()
        if self._sending and not full and not self._closed:
            # Held while the batch before is on its way: when it is answered, the calls
            # queued meanwhile go together (one batch, not one per step of the loop). A
            # batch that is slow to answer holds them back for HOLD at most.
            if self._hold is None:
                self._hold = loop.call_later(HOLD, self._flush, True)
            return
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        batch, self._queued, self._groups, self._count = self._queued, [], {}, 0
        # A task of its own: a caller that is cancelled must not cancel its batch's others.
        task = loop.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        """A batch is done: the calls held back for it go, once no batch is on its way."""
        self._sending.discard(task)
        if not self._sending:
            self._flush()

    async def _send(self, batch: list[_Call | _Group]) -> None:
        # A caller cancelled before its batch went out: its call is not sent at all (a
        # claim taken for nobody would hold its key until the claim expires).
        commands: list[_Command] = []
        targets: list[_Replies] = []
        for queued in batch:
            if len(queued) == 4:
                script, count, tail, reply = queued
                if not reply.done():
                    commands.append((script, count, tail))
                    targets.append(reply)
                continue
            script, each = queued
            each = [part for part in each if not part[4].done()]
            if each:
                commands.append(self._merged(script, each))
                targets.append([part[4] for part in each])
        if not commands:
            return
        try:
            outcomes = await self._execute(commands)
        except BaseException as problem:
            # Every caller is settled whatever ends the batch (none waits forever).
            for target in targets:
                for reply in target if isinstance(target, list) else (target,):
                    if reply.done():
                        continue
                    if isinstance(problem, Exception):
                        reply.set_exception(problem)
                    else:
                        reply.cancel()
            if not isinstance(problem, Exception):
                raise
            return
        for target, outcome in zip(targets, outcomes, strict=True):
            if isinstance(target, list):
                _hand_out(target, outcome)
            else:
                _settle(target, outcome)

    def _merged(self, script: AsyncScript, each: list[_Part]) -> _Command:
        """One call of an each script for its calls ``each``: their keys, then their
        arguments (the key count first, as every script call has it)."""
        keys = sum(part[0] for part in each)
        count = 1 + keys + sum(part[2] for part in each)
        head = _bulk(self._encoding, self._errors, (keys,))
        tail = b"".join([head, *(part[1] for part in each), *(part[3] for part in each)])
        return script, count, tail

    def _command(self, name: str, command: _Command) -> bytes:
        """The call as EVALSHA (naming the script by its digest) or EVAL (its source)."""
        script, count, tail = command
        named = script.sha if name == "EVALSHA" else script.script
        if isinstance(named, memoryview):
            named = bytes(named)
        head = self._heads.get((name, named))
        if head is None:  # the same for every call of the script: encoded once
            head = self._heads[name, named] = _bulk(self._encoding, self._errors, (name, named))
        return b"*%d\r\n" % (count + 2) + head + tail

    async def _execute(self, batch: list[_Command]) -> list[Any]:
        """Each command's outcome, in order: its reply, its own error (a ``ResponseError``),
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


def _settle(reply: asyncio.Future[Any], outcome: Any) -> None:
    """Give a caller its outcome (an error raised), unless it is gone (cancelled)."""
    if reply.done():
        return
    if isinstance(outcome, Exception):
        reply.set_exception(outcome)
    else:
        reply.set_result(outcome)


def _hand_out(replies: list[asyncio.Future[Any]], outcome: Any) -> None:
    """An each script's outcome, one element to each of its callers: its own reply or
    error; an outcome that is not one element per caller (a failure of the whole call) is
    every caller's."""
    if type(outcome) is not list or len(outcome) != len(replies):
        if not isinstance(outcome, Exception):
            outcome = ResponseError(
                f"a script run for {len(replies)} calls answered {outcome!r:.200}, "
                "not one reply each"
            )
        for reply in replies:
            _settle(reply, outcome)
        return
    for reply, element in zip(replies, outcome, strict=True):
        if reply.done():  # its caller was cancelled
            continue
        if isinstance(element, Exception):
            reply.set_exception(element)
        else:
            reply.set_result(element)


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
