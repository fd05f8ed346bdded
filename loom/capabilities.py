"""Capability: a named bundle of tools an agent can be given.

``Capability.toolset`` groups your own tools; the built-in capabilities (files, web, shell,
skills, MCP servers) compile to ordinary tools with honest flags, so every call goes through
the same governed path (docs/capabilities.md, docs/mcp.md, docs/governance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from loom.tools import Tool, ToolRegistry, tool
from loom.tools.confined import DEFAULT_EXCLUDE
from loom.tools.files import Files, FilesOptions
from loom.tools.mcp_capability import MCPTools
from loom.tools.mcp_config import ApprovalSetting, MCPServerConfig, Scope
from loom.tools.shell import Shell, ShellOptions
from loom.tools.skills import Skill, load_skills_dir
from loom.tools.web import Web, WebOptions
from loom.tools.web_search import SearchBackend


class Capability:
    """What an agent can do; compiles to tools that go through the same governed path."""

    def __init__(
        self,
        name: str,
        tools: Iterable[Tool[..., Any] | Callable[..., Any]] = (),
        *,
        skills: Iterable[Skill] = (),
    ) -> None:
        self.name = name
        self._tools = tuple(t if isinstance(t, Tool) else tool(t) for t in tools)
        self.skills: tuple[Skill, ...] = tuple(skills)
        """Skills this capability brings: the agent offers their names and when_to_use,
        and one ``load_skill`` tool for all of them (their own tools are in ``tools()``)."""

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

    @classmethod
    def files(
        cls,
        root: str | os.PathLike[str] = ".",
        *,
        read_only: bool = True,
        max_read_bytes: int = 256 * 1024,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        max_results: int = 500,
    ) -> Capability:
        """Read, list (glob) and search (regex) files under ``root``; write and edit
        (destructive) unless ``read_only``. Confined by the kernel's view of the tree:
        ``..``, absolute paths, symlinks anywhere and hard-linked files are refused.
        ``exclude`` (names, globs) defaults to ``.git`` and ``.env*``. A root that does
        not exist is a ValueError here."""
        options = FilesOptions(
            read_only=read_only, max_read_bytes=max_read_bytes, max_results=max_results
        )
        return cls("files", Files(root, exclude=exclude, options=options).tools())

    @classmethod
    def web(
        cls,
        *,
        allow_private: bool = False,
        allow_hosts: Iterable[str] | None = None,
        max_bytes: int = 2 * 1024 * 1024,
        timeout: float = 20.0,
        max_redirects: int = 5,
        search: SearchBackend | None = None,
    ) -> Capability:
        """``fetch_url``: a web page as text, from public addresses only unless
        ``allow_private`` (or the host is in ``allow_hosts``, which then also limits
        fetches to those hosts); with a ``search`` backend, ``web_search`` too."""
        options = WebOptions(
            allow_private=allow_private,
            allow_hosts=None if allow_hosts is None else tuple(allow_hosts),
            max_bytes=max_bytes,
            timeout=timeout,
            max_redirects=max_redirects,
        )
        return cls("web", Web(options, search=search).tools())

    @classmethod
    def shell(
        cls,
        *,
        require_approval: bool = True,
        timeout: float = 60.0,
        max_output_bytes: int = 64 * 1024,
        allow: Iterable[str] = (),
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Capability:
        """``run_command``: a command line run by ``/bin/sh -c`` in ``cwd`` (default: the
        current directory), no stdin, a scrubbed environment, the whole process group
        ended on timeout. Each call waits for a person's approval (the request shows the
        exact command) unless ``require_approval=False`` or the command matches an
        ``allow`` regular expression (the whole command must match)."""
        options = ShellOptions(
            require_approval=require_approval,
            timeout=timeout,
            max_output_bytes=max_output_bytes,
            allow=tuple(allow),
            env=dict(env or {}),
        )
        return cls("shell", [Shell(cwd or os.getcwd(), options).tool()])

    @classmethod
    def skill(
        cls,
        name: str,
        *,
        content: str,
        when_to_use: str,
        tools: Iterable[Tool[..., Any] | Callable[..., Any]] = (),
    ) -> Capability:
        """A skill: the agent sees ``name`` and ``when_to_use`` and loads ``content`` with
        the ``load_skill`` tool when it decides to; ``tools`` come with the skill."""
        return cls(
            f"skill:{name}",
            tools,
            skills=[Skill(name=name, content=content, when_to_use=when_to_use)],
        )

    @classmethod
    def skills_dir(cls, path: str | os.PathLike[str]) -> Capability:
        """Every ``<path>/<folder>/SKILL.md`` (YAML front matter with ``name`` and
        ``when_to_use``, then the body) as a skill."""
        return cls("skills", skills=load_skills_dir(path))

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
