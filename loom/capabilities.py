"""Capability: a named bundle of tools an agent can be given.

Built-in capabilities (files, web, shell, MCP, skills) build on this in later releases;
``Capability.toolset`` groups your own tools today.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from loom.tools import Tool, tool


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

    def __repr__(self) -> str:
        return f"<Capability {self.name} tools={[t.name for t in self._tools]}>"
