"""Capability: a named bundle of tools an agent can be given.

Built-in capabilities (files, web, shell, MCP, skills) build on this in later releases;
``Capability.toolset`` groups your own tools today.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from loom.tools import Tool, ToolRegistry, tool
from loom.tools.mcp_capability import MCPTools
from loom.tools.mcp_config import ApprovalSetting, MCPServerConfig, Scope


class Capability:
    """What an agent can do; compiles to tools that go through the same governed path."""

    def __init__(
        self, name: str, tools: Iterable[Tool[..., Any] | Callable[..., Any]] = ()
    ) -> None:
        self.name = name
        self._tools = tuple(t if isinstance(t, Tool) else tool(t) for t in tools)

    def tools(self) -> Sequence[Tool[..., Any]]:
        return self._tools

    @classmethod
    def toolset(
        cls, *tools: Tool[..., Any] | Callable[..., Any], name: str = "toolset"
    ) -> Capability:
        return cls(name, tools)

    def attach(self, registry: ToolRegistry) -> None:
        """Give an agent's tool registry this capability's tools."""
        for capability_tool in self.tools():
            registry.add(capability_tool)

    async def start(self) -> None:
        """Acquire what must be ready before the first run (an MCP server with
        ``connect=True``); raises when it cannot be."""

    async def release_session(self, session_id: str) -> None:
        """Release what the capability holds for one session (a session-scoped MCP
        server), once the session's work here is done."""

    async def aclose(self) -> None:
        """Release what the capability holds (MCP servers)."""

    def status(self) -> dict[str, Any] | None:
        """What ``/readyz`` shows of the capability, if anything."""
        return None

    @classmethod
    def mcp(
        cls,
        name: str,
        *,
        command: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect: bool = False,
        tools: Sequence[str] = (),
        exclude: Sequence[str] = (),
        read_only: Sequence[str] = (),
        require_approval: ApprovalSetting = None,
        startup_timeout: float = 30.0,
        call_timeout: float = 60.0,
        scope: Scope = "worker",
        max_in_flight: int = 64,
    ) -> MCPCapability:
        """An MCP server's tools, as ``mcp__<name>__<tool>``: ``command`` (stdio) or
        ``url`` (Streamable HTTP, with ``headers``). ``connect=True`` starts it when the
        worker starts, else on first use. ``tools``/``exclude``/``read_only`` take globs
        on the server's tool names; a tool not marked ``read_only`` needs approval unless
        ``require_approval`` says otherwise (False, a list of globs, or a rule)."""
        config = MCPServerConfig(
            name=name,
            command=command,
            args=tuple(args),
            env=tuple((env or {}).items()),
            cwd=cwd,
            url=url,
            headers=tuple((headers or {}).items()),
            connect=connect,
            scope=scope,
            startup_timeout=startup_timeout,
            call_timeout=call_timeout,
            max_in_flight=max_in_flight,
        )
        return MCPCapability(
            config,
            tools=tools,
            exclude=exclude,
            read_only=read_only,
            require_approval=require_approval,
        )

    def __repr__(self) -> str:
        return f"<Capability {self.name} tools={[t.name for t in self._tools]}>"


class MCPCapability(Capability):
    """An MCP server's tools (see ``Capability.mcp``); they change when the server's do."""

    def __init__(
        self,
        config: MCPServerConfig,
        *,
        tools: Sequence[str] = (),
        exclude: Sequence[str] = (),
        read_only: Sequence[str] = (),
        require_approval: ApprovalSetting = None,
    ) -> None:
        super().__init__(f"mcp:{config.name}")
        self.config = config
        self.source = MCPTools(
            config,
            tools=tools,
            exclude=exclude,
            read_only=read_only,
            require_approval=require_approval,
        )

    def tools(self) -> Sequence[Tool[..., Any]]:
        return self.source.tools()

    def attach(self, registry: ToolRegistry) -> None:
        registry.attach(self.source)

    async def start(self) -> None:
        if self.config.connect:
            await self.source.start()

    async def release_session(self, session_id: str) -> None:
        await self.source.release_session(session_id)

    async def aclose(self) -> None:
        await self.source.aclose()

    def status(self) -> dict[str, Any]:
        return self.source.status()

    @classmethod
    def from_settings(cls, data: Mapping[str, Any]) -> MCPCapability:
        """One entry of ``LOOM_MCP_SERVERS`` / ``[[mcp]]``: the server's fields plus
        ``tools``, ``exclude``, ``read_only`` and ``require_approval`` (bool or globs)."""
        values = dict(data)
        selection = {k: values.pop(k) for k in ("tools", "exclude", "read_only") if k in values}
        approval = values.pop("require_approval", None)
        return cls(MCPServerConfig.from_mapping(values), require_approval=approval, **selection)

    def __repr__(self) -> str:
        return f"<Capability {self.name} {self.config.describe()}>"
