"""How to reach one MCP server, and which of its tools an agent is given."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from loom.core.governance import ToolCallInfo

Scope = Literal["worker", "session"]
ApprovalSetting = bool | Sequence[str] | Callable[[ToolCallInfo], bool] | None

_SERVER_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")


@dataclass(frozen=True, slots=True)
class MCPServerConfig:
    """One MCP server: a command run over stdio, or a Streamable HTTP ``url``.

    ``key`` names the connection: two capabilities with the same transport settings share
    one server process per worker (``scope="worker"``) or per session (``"session"``).
    """

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    connect: bool = False
    scope: Scope = "worker"
    startup_timeout: float = 30.0
    call_timeout: float = 60.0
    max_in_flight: int = 64
    """Calls in flight on the connection at once; more wait their turn."""
    list_ttl: float = 300.0
    """Seconds after which the tool list is fetched again even without a list-changed
    notification (some servers never send one)."""
    ping_interval: float = 10.0
    """Seconds between liveness pings while the connection is idle."""
    degrade_after: int = 3
    """Failed starts in a row after which the server is reported degraded."""
    key: tuple[Any, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError(f"MCP server {self.name!r}: " + "; ".join(problems))
        transport = (self.command, self.args, self.env, self.cwd, self.url, self.headers)
        object.__setattr__(self, "key", (self.name, self.scope, *transport))

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def describe(self) -> str:
        """Where the server is, without secrets (header values and env are left out)."""
        if self.command is not None:
            return " ".join([self.command, *self.args])
        return str(self.url)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> MCPServerConfig:
        """A server from settings (``LOOM_MCP_SERVERS`` JSON or ``[[mcp]]`` TOML)."""
        known = {f for f in cls.__dataclass_fields__ if f != "key"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"MCP server settings: unknown field(s) {unknown}")
        values = dict(data)
        for name in ("args",):
            if name in values:
                values[name] = tuple(str(v) for v in values[name])
        for name in ("env", "headers"):
            if name in values:
                values[name] = tuple((str(k), str(v)) for k, v in dict(values[name]).items())
        return cls(**values)


def _problems(config: MCPServerConfig) -> list[str]:
    problems = []
    if not _SERVER_NAME.match(config.name):
        problems.append("the name must be 1-40 characters from a-z, A-Z, 0-9, '_' and '-'")
    if (config.command is None) == (config.url is None):
        problems.append("give exactly one of command= (stdio) or url= (Streamable HTTP)")
    if config.command is not None and not config.command.strip():
        problems.append("command= is empty")
    if config.url is not None and not config.url.startswith(("http://", "https://")):
        problems.append(f"url= must be http:// or https://, got {config.url!r}")
    if config.headers and config.url is None:
        problems.append("headers= apply to url= servers only")
    problems += [f"header {k!r} is empty" for k, v in config.headers if not v.strip()]
    if config.scope not in ("worker", "session"):
        problems.append(f"scope must be 'worker' or 'session', got {config.scope!r}")
    for name in ("startup_timeout", "call_timeout", "list_ttl", "ping_interval"):
        if not getattr(config, name) > 0:
            problems.append(f"{name} must be positive")
    for name in ("max_in_flight", "degrade_after"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    return problems
