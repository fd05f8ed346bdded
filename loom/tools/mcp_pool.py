"""The process's MCP connections: one per server configuration (``scope="worker"``), or
one per configuration and session (``scope="session"``), shared by every agent and run of
the process that names the same server."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from loom.tools.mcp_config import MCPServerConfig

if TYPE_CHECKING:
    from loom.tools.mcp_connection import MCPConnection

SESSION_IDLE = 300.0
"""Seconds after which a session's own server is closed when the session is not using it."""
MAX_SESSION_SERVERS = 64
"""Session servers per configuration at most; past it the least recently used idle one goes."""


class MCPPool:
    """Connections by configuration (and session), for the running event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shared: dict[tuple[Any, ...], MCPConnection] = {}
        self._sessions: dict[tuple[Any, ...], dict[str, MCPConnection]] = {}
        self._users: dict[tuple[Any, ...], int] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _for_this_loop(self) -> None:
        # Connections live in the event loop that opened them; a new loop (a test, a second
        # asyncio.run) starts from an empty pool instead of inheriting dead ones.
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._shared, self._sessions, self._users = {}, {}, {}

    def acquire(self, config: MCPServerConfig) -> None:
        """Count one user of ``config`` (a capability of an agent)."""
        self._for_this_loop()
        self._users[config.key] = self._users.get(config.key, 0) + 1

    async def release(self, config: MCPServerConfig, timeout: float = 10.0) -> None:
        """One user less; the last one closes the configuration's connections."""
        if self._loop is not asyncio.get_running_loop():
            return
        left = self._users.get(config.key, 0) - 1
        if left > 0:
            self._users[config.key] = left
            return
        self._users.pop(config.key, None)
        connections = [c for c in [self._shared.pop(config.key, None)] if c is not None]
        connections += self._sessions.pop(config.key, {}).values()
        await asyncio.gather(*(c.aclose(timeout) for c in connections))

    def connection(self, config: MCPServerConfig, session_id: str | None = None) -> MCPConnection:
        """The connection for ``config`` (and, with ``scope="session"``, for the session)."""
        # Imported here: the SDK loads on first use of MCP, not with ``import loom``.
        from loom.tools.mcp_connection import MCPConnection

        self._for_this_loop()
        if config.scope == "worker" or session_id is None:
            found = self._shared.get(config.key)
            if found is None:
                found = self._shared[config.key] = MCPConnection(config)
            return found
        sessions = self._sessions.setdefault(config.key, {})
        found = sessions.pop(session_id, None)
        if found is None:
            self._let_go_idle(sessions)
            found = MCPConnection(config, label=f"{config.name}[{session_id}]")
        sessions[session_id] = found  # most recently used last
        found.last_used = time.monotonic()
        return found

    async def close_session(
        self, config: MCPServerConfig, session_id: str, timeout: float = 10.0
    ) -> None:
        """Close the session's own server (``scope="session"``), if it has one."""
        if self._loop is not asyncio.get_running_loop():
            return
        found = self._sessions.get(config.key, {}).pop(session_id, None)
        if found is not None:
            await found.aclose(timeout)

    def _let_go_idle(self, sessions: dict[str, MCPConnection]) -> None:
        now = time.monotonic()
        for session_id, connection in list(sessions.items()):
            too_many = len(sessions) >= MAX_SESSION_SERVERS
            if too_many or now - connection.last_used > SESSION_IDLE:
                del sessions[session_id]
                task = asyncio.get_running_loop().create_task(connection.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def connections(self, config: MCPServerConfig) -> list[MCPConnection]:
        """Every open connection of ``config`` in this loop."""
        if self._loop is None:
            return []
        found = [c for c in [self._shared.get(config.key)] if c is not None]
        return found + list(self._sessions.get(config.key, {}).values())


_POOL = MCPPool()


def default_pool() -> MCPPool:
    """The pool of this process."""
    return _POOL
