"""Redis clients for the state: pooled connections checked before use, commands never
re-sent on their own.

redis-py's default re-sends any command that failed on its connection or timed out, up to
ten times. For a write that is wrong: a command the server executed before the connection
broke would be executed again (a signal kept pending twice). So no command is re-sent by
the client: the callers that retry do so with writes that are safe to land twice (fenced or
keyed, like a run's ending). A pooled connection idle for longer than
``HEALTH_CHECK_INTERVAL`` is checked with a PING before it is used, and one that fails the
PING (gone stale when Redis restarted or failed over) is replaced at once: the PING is the
one command re-sent, on a fresh connection, as nothing else was sent yet.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

HEALTH_CHECK_INTERVAL = 5
"""Seconds (whole: redis-py's URL option is an integer) a pooled connection may sit idle
before it is checked with a PING; ``?health_check_interval=`` in the URL overrides it."""

_PING_RETRY = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class _CheckedConnection:
    """Mixed into the pool's connection class: a failed health check reconnects once."""

    health_check_interval: float
    next_health_check: float

    async def check_health(self) -> None:
        if self.health_check_interval and (
            asyncio.get_running_loop().time() > self.next_health_check
        ):
            connection: Any = self
            await _PING_RETRY.call_with_retry(
                connection._send_ping, connection._ping_failed, with_failure_count=True
            )


def connect(url: str, *, socket_timeout: float | None) -> aioredis.Redis:
    """A client for ``url`` that answers text; no connection is made yet."""
    client = aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(NoBackoff(), 0),
    )
    pool = client.connection_pool
    base = pool.connection_class
    # The scheme decides the class (TCP, TLS, Unix socket): keep it, add the check.
    pool.connection_class = type(f"Checked{base.__name__}", (_CheckedConnection, base), {})
    return client


__all__ = ["HEALTH_CHECK_INTERVAL", "connect"]
