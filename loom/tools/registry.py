"""A name-indexed set of tools, as handed to an agent."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from loom.tools.tool import Tool, ToolDefinition

AnyTool = Tool[..., Any]


class ToolRegistry:
    """Tools by name, in insertion order; plain callables are wrapped with ``Tool``."""

    def __init__(self, tools: Iterable[AnyTool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, AnyTool] = {}
        self._definitions: tuple[ToolDefinition, ...] | None = None
        for item in tools:
            self.add(item)

    def add(self, item: AnyTool | Callable[..., Any]) -> AnyTool:
        """Register a tool (or wrap and register a callable) and return it."""
        found = item if isinstance(item, Tool) else Tool(item)
        if found.name in self._tools:
            raise ValueError(f"duplicate tool name {found.name!r}: tool names must be unique")
        self._tools[found.name] = found
        self._definitions = None
        return found

    def get(self, name: str) -> AnyTool | None:
        """The tool called ``name``, or None."""
        return self._tools.get(name)

    def definitions(self) -> list[ToolDefinition]:
        """Every tool's definition, in insertion order."""
        # Sent with every model request, so built once per change rather than per call.
        if self._definitions is None:
            self._definitions = tuple(t.definition for t in self._tools.values())
        return list(self._definitions)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Tool):
            return self._tools.get(item.name) is item
        return isinstance(item, str) and item in self._tools

    def __iter__(self) -> Iterator[AnyTool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({list(self._tools)!r})"
