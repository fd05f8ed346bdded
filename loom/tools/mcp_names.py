"""Loom names for MCP tools: ``mcp__<server>__<tool>``, valid for every provider."""

from __future__ import annotations

import hashlib
import re

_VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_MAX = 64
_DIGEST = 8


def loom_tool_name(server: str, tool: str) -> str:
    """``mcp__<server>__<tool>``, or, when that is not a valid provider tool name (too long,
    characters outside ``[a-zA-Z0-9_-]``), the name with those characters replaced, cut to
    fit and suffixed with a hash of the original: deterministic, and two MCP tools never
    share a name (a name left as is has no suffix; a changed one carries its own hash)."""
    raw = f"mcp__{server}__{tool}"
    if _VALID.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:_DIGEST]
    cleaned = _INVALID_CHARS.sub("_", raw)[: _MAX - _DIGEST - 1]
    return f"{cleaned}_{digest}"


def prefix(server: str) -> str:
    """What every Loom name of this server's tools starts with."""
    return f"mcp__{server}__"
