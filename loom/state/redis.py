"""Deprecated import path: ``RedisState`` lives in ``loom.state.redis_state``."""

from __future__ import annotations

from loom.state.redis_state import (
    DEFAULT_SESSION_TTL,
    MAX_LEASE_SCAN,
    MIN_REDIS_VERSION,
    RedisState,
)

__all__ = ["DEFAULT_SESSION_TTL", "MAX_LEASE_SCAN", "MIN_REDIS_VERSION", "RedisState"]
