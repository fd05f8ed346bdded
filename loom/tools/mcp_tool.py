"""An MCP server's tool as a Loom ``Tool``: the server's input schema, a call through the
shared connection, governed like any other tool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mcp.types as mcp_types
from jsonschema import exceptions as schema_errors
from jsonschema.validators import validator_for

from loom.tools.context import ToolContext
from loom.tools.tool import ApprovalRule, Tool, ToolArgumentsError, ToolDefinition

ConnectionFor = Callable[[ToolContext | None], Any]
"""Gives the connection a call goes to (the worker's, or the calling session's)."""

_MAX_PROBLEMS = 5


class MCPToolError(RuntimeError):
    """The server answered the call with an error result."""


class MCPTool(Tool[..., Any]):
    """One tool of an MCP server. Its schema is the server's; ``invoke`` checks the
    arguments against it locally, then calls the server; an error result raises
    ``MCPToolError`` (a tool error the model sees)."""

    def __init__(
        self,
        spec: mcp_types.Tool,
        *,
        name: str,
        server: str,
        connection_for: ConnectionFor,
        read_only: bool,
        destructive: bool,
        requires_approval: bool | ApprovalRule,
        call_timeout: float,
    ) -> None:
        # Not Tool.__init__: there is no Python function whose signature gives the schema.
        self.fn = self._unsupported_direct_call
        self._call = self._unsupported_direct_call
        self.name = name
        self.mcp_name = spec.name
        self.server = server
        self.description = spec.description or spec.title or f"{spec.name} (MCP server {server})"
        self.read_only = read_only
        self.destructive = destructive
        self.concurrency_safe = read_only
        self.requires_approval = requires_approval
        self.idempotent = False  # a server's idempotentHint is not trusted to allow re-runs
        self.is_async = True
        self.parameters = _object_schema(spec.input_schema)
        self.definition = ToolDefinition(name, self.description, self.parameters)
        self.call_timeout = call_timeout
        self._connection_for = connection_for
        try:
            cls = validator_for(self.parameters)
            cls.check_schema(self.parameters)
            self._validator: Any = cls(self.parameters)
        except schema_errors.SchemaError as exc:
            raise ValueError(
                f"MCP tool {spec.name!r} has an invalid input schema: {exc.message}"
            ) from None

    def _unsupported_direct_call(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"MCP tool {self.name!r} runs through invoke(), not a direct call")

    async def invoke(self, arguments: Mapping[str, Any], context: ToolContext | None = None) -> Any:
        problems = [
            f"{'.'.join(str(p) for p in error.absolute_path) or 'arguments'}: {error.message}"
            for error in self._validator.iter_errors(dict(arguments))
        ]
        if problems:
            raise ToolArgumentsError(
                self.name,
                f"invalid arguments for tool {self.name!r}: " + "; ".join(problems[:_MAX_PROBLEMS]),
            )
        connection = self._connection_for(context)
        result: mcp_types.CallToolResult = await connection.call(
            self.mcp_name, dict(arguments), self.call_timeout
        )
        if result.is_error:
            raise MCPToolError(_text_of(result.content) or "the server reported an error")
        if result.structured_content is not None:
            return result.structured_content
        return _text_of(result.content)

    def __repr__(self) -> str:
        return (
            f"MCPTool(name={self.name!r}, server={self.server!r}, read_only={self.read_only}, "
            f"destructive={self.destructive}, requires_approval={self.requires_approval!r})"
        )


def _object_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Providers want an object schema; a server may send none or omit ``type``."""
    found = dict(schema or {})
    found.setdefault("type", "object")
    found.setdefault("properties", {})
    return found


def _text_of(content: list[mcp_types.ContentBlock]) -> str:
    parts: list[str] = []
    for block in content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
            parts.append(f"[{block.type}: {block.mime_type}, {len(block.data)} base64 characters]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource: {block.uri}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource: {resource.uri}]")
    return "\n".join(parts)
