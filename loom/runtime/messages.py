"""Deprecated path: messages, tool calls and usage live in ``loom.core.messages``."""

from loom.core.messages import Message, Role, ToolCall, Usage

__all__ = ["Message", "Role", "ToolCall", "Usage"]
