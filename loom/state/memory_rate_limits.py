"""Rate limits in this process: a sliding-window log per key, for ``MemoryState``."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

DEFAULT_MAX_KEYS = 10_000


class MemoryRateLimits:
    """The ``RateLimits`` port in this process's memory: per key, the times of the uses in
    the last window (at most ``limit`` of them), so a limit holds exactly over any window,
    not per fixed minute. At most ``max_keys`` keys are kept; past that the key used least
    recently is forgotten (its uses no longer count). ``clock`` is monotonic seconds.

    Every step runs without awaiting, so concurrent tasks of one event loop cannot both
    take the last use.
    """

    def __init__(
        self, *, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._clock = clock
        self._uses: dict[str, deque[float]] = {}  # key -> use times, oldest first

    async def take(self, key: str, limit: int, window: float) -> float | None:
        if limit < 1 or window <= 0:
            raise ValueError(f"rate limit for {key!r}: limit and window must be positive")
        now = self._clock()
        uses = self._uses.pop(key, None)
        if uses is None:
            uses = deque()
            if len(self._uses) >= self.max_keys:
                del self._uses[next(iter(self._uses))]
        self._uses[key] = uses  # re-inserted: the dict's order is least recently used first
        while uses and uses[0] <= now - window:
            uses.popleft()
        while len(uses) > limit:  # the limit was lowered since these uses were counted
            uses.popleft()
        if len(uses) >= limit:
            return max(uses[0] + window - now, 0.001)
        uses.append(now)
        return None

    def __len__(self) -> int:
        """Keys held now (for tests of the bound)."""
        return len(self._uses)
