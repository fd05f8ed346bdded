"""Deprecated import path: the in-memory session store lives in ``loom.state.memory_sessions``."""

from __future__ import annotations

from loom.state.memory_sessions import InMemorySessionStore, SessionState

__all__ = ["InMemorySessionStore", "SessionState"]
