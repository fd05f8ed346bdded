"""Script calls made in one step of the event loop go to Redis together, in one pipeline.

The gateway's accept path calls two scripts per signal with a dedupe key (the claim before
the publish, the marker after the confirm). Under load, many requests make such a call in
the same step of the loop, and each call on its own took a pooled connection and paid
redis-py's per-command cost: together about as much CPU as the rest of the request.
``AutoPipeline.call`` queues the call instead; at the end of the step (or as soon as
``max_batch`` calls are queued) the queued calls go out in one pipeline without a
transaction (each script is atomic on its own; calls of different requests need not be
atomic together): one write, one connection, one round trip.

Each caller gets its own reply, or its own error: a script that fails (a wrong type) fails
that caller alone. A failure of the connection (Redis gone, a timeout) fails every caller of
the batch, as it would have failed each of their calls on its own, and like those calls a
batch is never re-sent (``redis_connect``): the calls may or may not have run. The one
exception is NOSCRIPT (Redis restarted or its scripts were flushed): Redis ran nothing of
that call, so the script is loaded and the calls it refused are sent again, once. The
scripts are sent by their SHA alone: redis-py's own pipelines ask Redis which scripts it
knows before every execution, a second round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

MAX_BATCH = 256
"""Calls sent in one pipeline at most: the ones queued beyond it go out in the next."""

_Call = tuple[AsyncScript, Sequence[Any], "asyncio.Future[Any]"]
"""A queued call: the script, its keys and arguments (as EVALSHA takes them), its reply."""


class AutoPipeline:
    """Sends the script calls made in one step of the event loop as one pipeline."""

    def __init__(self, client: aioredis.Redis, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._client = client
        self.max_batch = max_batch
        self._queued: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply to ``keys`` and ``args``, sent with the other calls of this
        step of the loop; raises what the call raised (redis-py's exceptions)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((script, (len(keys), *keys, *args), reply))
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
        """Each call's reply or its own error, in order."""
        async with self._client.pipeline(transaction=False) as pipe:
            for script, arguments, _ in batch:
                pipe.execute_command("EVALSHA", script.sha, *arguments)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            refused = [at for at, answer in enumerate(replies) if isinstance(answer, NoScriptError)]
            if not refused:
                return replies
            for script in {id(batch[at][0]): batch[at][0] for at in refused}.values():
                await self._client.script_load(script.script)
            for at in refused:
                script, arguments, _ = batch[at]
                pipe.execute_command("EVALSHA", script.sha, *arguments)
            again = await pipe.execute(raise_on_error=False)
        for at, answer in zip(refused, again, strict=True):
            replies[at] = answer
        return replies

    async def close(self) -> None:
        """Send what is queued and wait for the batches on their way (each ends within
        the client's socket timeout)."""
        self._flush()
        if self._sending:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._sending, return_exceptions=True)


__all__ = ["MAX_BATCH", "AutoPipeline"]
