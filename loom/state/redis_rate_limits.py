"""Rate limits on Redis, shared by every replica: one atomic script per use."""

from __future__ import annotations

import itertools
import math
import secrets

import redis.asyncio as aioredis

from loom.state import redis_scripts as scripts
from loom.state.redis_sessions import unavailable


class RedisRateLimits:
    """The ``RateLimits`` port on Redis: a sliding window per key (a sorted set of use
    times under ``<prefix>:rate:<key>``, scored by the server's clock), checked and counted
    in one script, so replicas together never pass the limit. A key holds at most ``limit``
    uses and expires one window after its last use. Failures raise ``StateUnavailable``.
    """

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, where: str, password: str | None = None
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._where, self._password = where, password
        self._take = client.register_script(scripts.TAKE_RATE_LIMIT)
        # Members must be unique across replicas: uses in the same microsecond must not merge.
        self._member_prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    async def take(self, key: str, limit: int, window: float) -> float | None:
        if limit < 1 or window <= 0:
            raise ValueError(f"rate limit for {key!r}: limit and window must be positive")
        member = f"{self._member_prefix}:{next(self._counter)}"
        window_us = max(1, math.ceil(window * 1_000_000))
        with unavailable(self._where, self._password):
            wait = await self._take(
                keys=[f"{self._prefix}:rate:{key}"], args=[limit, window_us, member]
            )
        return None if wait is None else int(wait) / 1_000_000
