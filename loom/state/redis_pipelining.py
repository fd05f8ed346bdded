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
it is made, a script that fails (a wrong type) fails that caller alone. A failure of the
connection (Redis gone, a timeout) fails every caller of the batch, as it would have
failed each of their calls on its own, and like those calls a batch is never re-sent
(``redis_connect``): the calls may or may not have run. The one exception is NOSCRIPT
(Redis restarted or its scripts were flushed): Redis ran nothing of that call, so the
script is loaded and the calls it refused are sent again, once.

The batch is written and read on a pooled connection directly, each command encoded once
as it is queued: redis-py's pipelines ask Redis which scripts it knows before every
execution (a second round trip) and cost about as much CPU per batch as the calls did.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

MAX_BATCH = 256
"""Calls sent in one round trip at most: the ones queued beyond it go out in the next."""

_Call = tuple[AsyncScript, bytes, "asyncio.Future[Any]"]
"""A queued call: its script, its EVALSHA command as sent, its reply."""


def pack(encoding: str, errors: str, *arguments: str | int | bytes) -> bytes:
    """One command in Redis's protocol (RESP): the arguments as bulk strings."""
    parts = [b"*%d\r\n" % len(arguments)]
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
        self._sending: set[asyncio.Task[None]] = set()

    async def call(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int]
    ) -> Any:
        """The script's reply to ``keys`` and ``args``, sent with the other calls of this
        step of the loop; raises what the call raised (redis-py's exceptions)."""
        command = pack(self._encoding, self._errors, "EVALSHA", script.sha, len(keys), *keys, *args)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((script, command, reply))
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
        try:
            replies = await self._execute(batch)
        except asyncio.CancelledError:
            for _, _, reply in batch:
                reply.cancel()
            raise
        except Exception as problem:
            for _, _, reply in batch:
                if not reply.done():
                    reply.set_exception(problem)
            return
        for (_, _, reply), answer in zip(batch, replies, strict=True):
            if reply.done():  # its caller was cancelled
                continue
            if isinstance(answer, Exception):
                reply.set_exception(answer)
            else:
                reply.set_result(answer)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        """Each call's reply or its own error (a ``ResponseError``), in order."""
        pool = self._client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            replies = await _round_trip(connection, [command for _, command, _ in batch])
            refused = [at for at, answer in enumerate(replies) if isinstance(answer, NoScriptError)]
            if refused:
                for script in {id(batch[at][0]): batch[at][0] for at in refused}.values():
                    await self._client.script_load(script.script)
                again = await _round_trip(connection, [batch[at][1] for at in refused])
                for at, answer in zip(refused, again, strict=True):
                    replies[at] = answer
            return replies
        finally:
            await pool.release(connection)

    async def close(self) -> None:
        """Send what is queued and wait for the batches on their way (each ends within
        the client's socket timeout)."""
        self._flush()
        if self._sending:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._sending, return_exceptions=True)


async def _round_trip(connection: AbstractConnection, commands: list[bytes]) -> list[Any]:
    """Write the commands at once, then read a reply for each. A failure of the connection
    raises (the connection closes itself: no reply left unread for its next user)."""
    await connection.send_packed_command(b"".join(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await connection.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


__all__ = ["MAX_BATCH", "AutoPipeline", "pack"]
