"""A name-indexed set of tools, as handed to an agent."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from loom.tools.tool import Tool, ToolDefinition

AnyTool = Tool[..., Any]


class ToolSource(Protocol):
    """Tools that change while the agent lives (an MCP server's): the registry asks the
    source for them instead of holding them."""

    @property
    def revision(self) -> int:
        """Moves whenever ``tools()`` would answer differently."""
        ...

    def tools(self) -> Sequence[AnyTool]: ...

    def get(self, name: str) -> AnyTool | None: ...

    async def prepare(self, session_id: str | None = None) -> None:
        """Called before a run: have the tools ready (in memory, not on each model call)."""
        ...


class ToolRegistry:
    """Tools by name, in insertion order; plain callables are wrapped with ``Tool``."""

    def __init__(self, tools: Iterable[AnyTool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, AnyTool] = {}
        self._definitions: tuple[ToolDefinition, ...] | None = None
        self._sources: list[ToolSource] = []
        self._revisions: tuple[int, ...] = ()
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

    def attach(self, source: ToolSource) -> None:
        """Offer a source's tools too, as they are at each model request."""
        self._sources.append(source)
        self._definitions = None

    async def prepare(self, session_id: str | None = None) -> None:
        """Let every source get its tools ready before a run."""
        for source in self._sources:
            await source.prepare(session_id)

    def get(self, name: str) -> AnyTool | None:
        """The tool called ``name``, or None."""
        found = self._tools.get(name)
        if found is None:
            for source in self._sources:
                found = source.get(name)
                if found is not None:
                    return found
        return found

    def definitions(self) -> list[ToolDefinition]:
        """Every tool's definition, in insertion order (then each source's)."""
        # Sent with every model request, so built once per change rather than per call.
        revisions = tuple(source.revision for source in self._sources)
        if self._definitions is None or revisions != self._revisions:
            self._revisions = revisions
            self._definitions = tuple(t.definition for t in self)
        return list(self._definitions)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Tool):
            return self.get(item.name) is item
        return isinstance(item, str) and self.get(item) is not None

    def __iter__(self) -> Iterator[AnyTool]:
        yield from self._tools.values()
        for source in self._sources:
            yield from source.tools()

    def __len__(self) -> int:
        return len(self._tools) + sum(len(source.tools()) for source in self._sources)

    def __repr__(self) -> str:
        return f"ToolRegistry({list(self._tools)!r})"
