"""Errors of MCP calls, importable without the ``mcp`` SDK (``import loom`` stays light)."""

from __future__ import annotations


class MCPUnavailableError(RuntimeError):
    """The server cannot be reached now: it did not start, or its connection dropped."""


class MCPCallTimeoutError(RuntimeError):
    """The server did not answer a call in time; the connection stays usable. (Not a
    ``TimeoutError``: the run would take it for its own tool timeout.)"""
