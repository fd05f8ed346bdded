"""The backends a state port's contract runs on: memory and Redis (every port), and the
SQLite test backend (``Claims`` and ``Leases``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from loom.state import MemoryState
from tests.services import delete_redis_keys, require_redis
from tests.state_contract.sqlite_ports import SqliteClaimsAndLeases

TTL = 0.2  # short enough to wait out, long enough for a round trip to finish first


class Backend:
    """Makes handles of one kind; ``peer`` is another handle on the same data, the way a
    second replica sees it (for memory, the same object: one process shares one state)."""

    def __init__(
        self, kind: str, url: str = "", prefix: str = "", path: Path | None = None
    ) -> None:
        self.kind, self.url, self.prefix, self.path = kind, url, prefix, path
        self.handles: list[Any] = []

    def new(self, **options: Any) -> Any:
        """A ``State`` (memory, Redis), or the ports a test backend implements (sqlite)."""
        handle: Any
        if self.kind == "memory":
            handle = MemoryState(**options)
        elif self.kind == "sqlite":
            assert self.path is not None
            handle = SqliteClaimsAndLeases(self.path, **options)
        else:
            from loom.state.redis_state import RedisState

            handle = RedisState(self.url, prefix=self.prefix, **options)
        self.handles.append(handle)
        return handle

    def peer(self, handle: Any, **options: Any) -> Any:
        return handle if self.kind == "memory" else self.new(**options)

    async def close(self) -> None:
        for handle in self.handles:
            if self.kind == "sqlite":
                handle.close()
            else:
                await handle.close()
        if self.kind == "redis":
            await delete_redis_keys(self.url, self.prefix)


def make_backend(kind: str, tmp_path: Path) -> Backend:
    if kind == "memory":
        return Backend("memory")
    if kind == "sqlite":
        return Backend("sqlite", path=tmp_path / "state.sqlite3")
    return Backend("redis", require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}")


def ms(seconds: float) -> int:
    return round(seconds * 1000)
