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
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
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


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def connect(url: str, *, socket_timeout: float | None) -> aioredis.Redis:
    """A client for ``url`` that answers text; no connection is made yet. ``url`` is a
    Redis URL, or a Sentinel one (``sentinel_client``)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": Retry(NoBackoff(), 0),
    }
    if urlsplit(url).scheme.lower() in SENTINEL_SCHEMES:
        client = sentinel_client(url, options)
    else:
        client = aioredis.Redis.from_url(url, **options)
    pool = client.connection_pool
    base = pool.connection_class
    # The scheme decides the class (TCP, TLS, Unix socket): keep it, add the check.
    pool.connection_class = type(f"Checked{base.__name__}", (_CheckedConnection, base), {})
    return client


def sentinel_client(url: str, options: dict[str, Any]) -> aioredis.Redis:
    """The primary a Redis Sentinel names, followed across failovers:
    ``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``
    (``rediss+sentinel://`` for TLS to Redis; ``?sentinel_password=`` when the sentinels
    want one). After a failover the pool's connections go to the new primary."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    path = [unquote(part) for part in parts.path.split("/") if part]
    if not hosts or not path:
        raise ValueError(
            "a Sentinel URL needs its sentinels and the service: "
            "redis+sentinel://HOST:26379[,HOST:26379]/SERVICE[/DB]"
        )
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "26379")
        sentinels.append((name.strip("[]"), int(port)))
    query = parse_qs(parts.query)
    sentinel_options: dict[str, Any] = {"socket_timeout": options["socket_timeout"]}
    if "sentinel_password" in query:
        sentinel_options["password"] = query["sentinel_password"][0]
    master = dict(options, db=int(path[1]) if len(path) > 1 else 0)
    _, _, password = userinfo.partition(":")
    if password:
        master["password"] = unquote(password)
    if parts.scheme.lower().startswith("rediss"):
        master["ssl"] = True
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_options, **master)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = manager.master_for(path[0], redis_class=aioredis.Redis)
    return client


__all__ = ["HEALTH_CHECK_INTERVAL", "SENTINEL_SCHEMES", "connect", "sentinel_client"]
