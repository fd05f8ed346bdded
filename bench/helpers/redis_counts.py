"""Counts the Redis commands and round trips this process sends, by command (bench helper).

Client-side, so other users of a shared Redis do not blur the count (``INFO commandstats``
would). Each command packed is one command (a script's ``EVALSHA`` is one, named by the
script it runs); each packed write to a socket is one round trip (a pipeline or a
transaction is one however many commands it holds).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.connection import AbstractConnection


def _script_names() -> dict[str, str]:
    """SHA1 of every Lua script constant Loom registers -> its name."""
    from loom.state import (
        redis_endings,
        redis_history,
        redis_rate_limits,
        redis_scripts,
        redis_sessions,
        redis_suspensions,
        redis_working,
    )

    names: dict[str, str] = {}
    for module in (redis_scripts, redis_sessions, redis_endings, redis_history, redis_working,
                   redis_suspensions, redis_rate_limits):  # fmt: skip
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and "redis.call" in value:
                names[hashlib.sha1(value.encode()).hexdigest()] = name
    return names


@dataclass
class RedisCounts:
    commands: Counter[str] = field(default_factory=Counter)
    round_trips: int = 0

    def snapshot(self) -> RedisCounts:
        return RedisCounts(Counter(self.commands), self.round_trips)

    def since(self, earlier: RedisCounts) -> RedisCounts:
        return RedisCounts(self.commands - earlier.commands, self.round_trips - earlier.round_trips)

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    def per(self, n: int, top: int = 12) -> str:
        """The commands per ``n`` (runs), largest first."""
        common = self.commands.most_common(top)
        return ", ".join(f"{name} {count / n:.2f}" for name, count in common)


@contextmanager
def counting() -> Iterator[RedisCounts]:
    """Count every command and round trip of every redis-py asyncio connection meanwhile."""
    counts = RedisCounts()
    scripts = _script_names()
    pack, send = AbstractConnection.pack_command, AbstractConnection.send_packed_command

    def pack_command(self: AbstractConnection, *args: Any) -> Any:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        name = name.upper()
        if name == "EVALSHA" and len(args) > 1:
            sha = args[1].decode() if isinstance(args[1], bytes) else str(args[1])
            name = f"EVALSHA {scripts.get(sha, sha[:8])}"
        counts.commands[name] += 1
        return pack(self, *args)

    async def send_packed_command(self: AbstractConnection, command: Any, *a: Any, **k: Any) -> Any:
        counts.round_trips += 1
        return await send(self, command, *a, **k)

    AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        AbstractConnection.pack_command = pack  # type: ignore[method-assign]
        AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
