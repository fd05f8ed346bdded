"""``Capability.mcp``: an MCP server's tools, named ``mcp__<server>__<tool>``, governed.

Governance only tightens from what a server says: a tool is read-only when the user says so
(``read_only=[globs]``), never because of the server's ``readOnlyHint``; the server's
``destructiveHint`` marks a tool destructive; by default every tool the user did not mark
read-only needs a person's approval (``require_approval=False`` turns that off).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from loom.core.governance import ToolCallInfo
from loom.tools.context import ToolContext
from loom.tools.mcp_config import ApprovalSetting, MCPServerConfig
from loom.tools.mcp_errors import MCPUnavailableError
from loom.tools.mcp_names import loom_tool_name, prefix
from loom.tools.mcp_pool import MCPPool, default_pool
from loom.tools.tool import ApprovalRule, Tool

if TYPE_CHECKING:  # the SDK loads on first use of MCP, not with ``import loom``
    import mcp.types as mcp_types

    from loom.tools.mcp_connection import MCPConnection
    from loom.tools.mcp_tool import MCPTool

logger = logging.getLogger("loom.mcp")


class MCPTools:
    """The tools of one MCP server as an agent sees them (a source for ``ToolRegistry``):
    built from the connection's cached list, rebuilt when that list changes."""

    def __init__(
        self,
        config: MCPServerConfig,
        *,
        tools: Sequence[str] = (),
        exclude: Sequence[str] = (),
        read_only: Sequence[str] = (),
        require_approval: ApprovalSetting = None,
        pool: MCPPool | None = None,
    ) -> None:
        self.config = config
        self.include = tuple(tools)
        self.exclude = tuple(exclude)
        self.read_only = tuple(read_only)
        if not (
            require_approval is None
            or isinstance(require_approval, bool)
            or callable(require_approval)
            or (isinstance(require_approval, Sequence) and not isinstance(require_approval, str))
        ):
            raise ValueError(
                f"MCP server {config.name!r}: require_approval must be True, False, a list of "
                f"tool name globs or a callable on the call, not {require_approval!r}"
            )
        self.require_approval = require_approval
        self.pool = pool or default_pool()
        self._built: dict[str, MCPTool] = {}
        self._built_from: tuple[int, int] | None = None
        self._acquired = False
        self._prefix = prefix(config.name)
        self._catalog: MCPConnection | None = None

    # -- the registry's view -----------------------------------------------------------
    @property
    def revision(self) -> int:
        catalog = self._catalog
        return 0 if catalog is None else hash((id(catalog), catalog.revision))

    def tools(self) -> Sequence[Tool[..., Any]]:
        """The server's tools as last listed (none before the first connection)."""
        return tuple(self._current().values())

    def get(self, name: str) -> Tool[..., Any] | None:
        """The tool called ``name``; for a name of this server while the server cannot
        give its list, a tool whose call fails with the reason."""
        found = self._current().get(name)
        if found is None and name.startswith(self._prefix) and not self._current():
            try:
                return _Unavailable(name, self)
            except ValueError:
                return None  # not even a valid tool name
        return found

    async def prepare(self, session_id: str | None = None) -> None:
        """Before a run: have the server's tool list (starting a lazy server on first
        use). A failure is logged, not raised: the run goes on, and a call of this server's
        tools is a tool error naming the reason."""
        connection = self._connection(session_id)
        if connection.tools and connection.state == "ready":
            return
        try:
            await connection.ready()
        except MCPUnavailableError as exc:
            logger.warning("%s", exc)

    async def start(self) -> None:
        """Connect now (``connect=True`` at worker start); raises when the server cannot
        be started."""
        await self._connection(None).ready()

    async def release_session(self, session_id: str) -> None:
        """The session is done here (the daemon let go of its lease): a session-scoped
        server of it stops."""
        if self._acquired and self.config.scope == "session":
            await self.pool.close_session(self.config, session_id)

    async def aclose(self) -> None:
        if self._acquired:
            self._acquired = False
            await self.pool.release(self.config)

    def status(self) -> dict[str, Any]:
        connections = self.pool.connections(self.config) if self._acquired else []
        return {
            "transport": self.config.transport,
            "connect": self.config.connect,
            "scope": self.config.scope,
            "connections": len(connections),
            "ready": sum(c.state == "ready" for c in connections),
            "degraded": any(c.degraded for c in connections),
            "tools": len(self._built),
            "last_error": next((c.last_error for c in connections if c.last_error), None),
        }

    # -- internals ---------------------------------------------------------------------
    def _connection(self, session_id: str | None) -> MCPConnection:
        if not self._acquired:
            self.pool.acquire(self.config)
            self._acquired = True
        connection = self.pool.connection(self.config, session_id)
        if self._catalog is None or self.config.scope == "worker" or connection.tools:
            self._catalog = connection
        return connection

    def _connection_for(self, context: ToolContext | None) -> MCPConnection:
        return self._connection(context.session_id if context is not None else None)

    def _current(self) -> dict[str, MCPTool]:
        catalog = self._catalog
        if catalog is None:
            return {}
        stamp = (id(catalog), catalog.revision)
        if stamp != self._built_from:
            self._built = self._build(catalog.tools)
            self._built_from = stamp
        return self._built

    def _build(self, specs: Sequence[mcp_types.Tool]) -> dict[str, MCPTool]:
        from loom.tools.mcp_tool import MCPTool

        built: dict[str, MCPTool] = {}
        for spec in specs:
            if self.include and not _matches(spec.name, self.include):
                continue
            if _matches(spec.name, self.exclude):
                continue
            name = loom_tool_name(self.config.name, spec.name)
            annotations = spec.annotations
            destructive = bool(annotations and annotations.destructive_hint is True)
            read_only = not destructive and (
                _matches(spec.name, self.read_only) or _matches(name, self.read_only)
            )
            try:
                built[name] = MCPTool(
                    spec,
                    name=name,
                    server=self.config.name,
                    connection_for=self._connection_for,
                    read_only=read_only,
                    destructive=destructive,
                    requires_approval=self._approval(spec.name, name, read_only),
                    call_timeout=self.config.call_timeout,
                )
            except ValueError as exc:
                logger.warning("MCP server %s: %s; left out", self.config.name, exc)
        return built

    def _approval(self, mcp_name: str, name: str, read_only: bool) -> bool | ApprovalRule:
        setting = self.require_approval
        if setting is None:
            return not read_only
        if isinstance(setting, bool):
            return setting
        if callable(setting):
            rule: Callable[[ToolCallInfo], bool] = setting
            return rule
        return _matches(mcp_name, setting) or _matches(name, setting)


class _Unavailable(Tool[..., Any]):
    """Stands in for a tool of a server that cannot list its tools: calling it is a tool
    error that says why."""

    def __init__(self, name: str, source: MCPTools) -> None:
        super().__init__(_never, name=name, description="unavailable MCP tool")
        self._source = source

    async def invoke(self, arguments: Any, context: ToolContext | None = None) -> Any:
        connection = self._source._connection_for(context)
        await connection.ready()  # raises MCPUnavailableError with the reason
        raise MCPUnavailableError(
            f"MCP server {self._source.config.name!r} has no tool {self.name!r}"
        )


def _never() -> None:
    """Never called."""


def _matches(name: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)
