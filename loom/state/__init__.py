"""Session state: the store port and its in-memory and file implementations, and the
daemon's shared state port (``State``) with its memory and Redis backends."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from loom.state.base import Lease, StaleFencingToken, State
from loom.state.file import FileSessionStore
from loom.state.memory import InMemorySessionStore
from loom.state.memory_state import MemoryState
from loom.state.sessions import RunRecord, SessionSnapshot, SessionStore, trim_history


def state_from_url(url: str, **options: Any) -> State:
    """The state backend a URL names: ``memory://`` or ``redis://`` / ``rediss://``.

    ``options`` go to the backend's constructor. Redis support is imported only here, so
    ``import loom`` never imports the redis package.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryState(**options)
    if scheme in ("redis", "rediss"):
        from loom.state.redis import RedisState

        return RedisState(url, **options)
    shown = f"{scheme}://" if scheme else repr(url)
    raise ValueError(
        f"unsupported state URL {shown}: use memory:// or redis://host:6379/0 (rediss:// for TLS)"
    )


__all__ = [
    "FileSessionStore",
    "InMemorySessionStore",
    "Lease",
    "MemoryState",
    "RunRecord",
    "SessionSnapshot",
    "SessionStore",
    "StaleFencingToken",
    "State",
    "state_from_url",
    "trim_history",
]
