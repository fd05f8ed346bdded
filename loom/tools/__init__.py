"""Tools: typed Python functions a model can call, with schemas built from signatures."""

from loom.tools.context import ToolContext
from loom.tools.registry import ToolRegistry
from loom.tools.tool import Tool, ToolArgumentsError, ToolDefinition, render_result, tool

__all__ = [
    "Tool",
    "ToolArgumentsError",
    "ToolContext",
    "ToolDefinition",
    "ToolRegistry",
    "render_result",
    "tool",
]
