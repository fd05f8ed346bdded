"""Poison limits: give up on work that keeps failing, and only on that.

``PoisonLimit`` counts the failures in a row of one key (a session, a message) in the
state's markers, kept ``memory`` seconds after the last one. Outages of Redis or RabbitMQ
are waited out, not counted: nothing is wrong with the work then. At ``max_attempts``
failures it says so, and the caller gives the work up (to the dead letters) and calls
``recovered`` when the key may start again from zero.
"""

from __future__ import annotations

from typing import Protocol

from loom.delivery.backoff import OUTAGES


class Markers(Protocol):
    """The part of the state a poison limit keeps its counts in."""

    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None: ...

    async def marker(self, key: str) -> str | None: ...


class PoisonLimit:
    """Counts failures in a row per key; ``failed`` is True at ``max_attempts``."""

    def __init__(
        self,
        markers: Markers,
        *,
        max_attempts: int = 5,
        memory: float = 86_400.0,
        exempt: tuple[type[BaseException], ...] = OUTAGES,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.markers = markers
        self.max_attempts = max_attempts
        self.memory = memory
        self.exempt = exempt

    async def failed(self, key: str, problem: BaseException) -> int | None:
        """Count a failure of ``key``: the failures in a row when that reaches the limit
        (not stored: ``recovered`` starts again once the work is given up), else None."""
        if isinstance(problem, self.exempt):
            return None
        failures = int(await self.markers.marker(key) or 0) + 1
        if failures < self.max_attempts:
            await self.markers.set_marker(key, str(failures), ttl=self.memory)
            return None
        return failures

    async def recovered(self, key: str) -> None:
        """The work of ``key`` went through (or was given up): start again from zero."""
        await self.markers.set_marker(key, "0", ttl=self.memory)
