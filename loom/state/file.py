"""Deprecated import path: ``FileSessionStore`` lives in ``loom.state.file_sessions``."""

from __future__ import annotations

from loom.state.file_sessions import FileSessionStore

__all__ = ["FileSessionStore"]
