"""Session state: the kernel's session store port with its memory, file and Redis stores,
and the daemon's shared state: the role-sized ports (``Claims``, ``WorkingState``,
``Leases``, ``FeedbackLog``), their union ``State``, and its memory and Redis backends."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from loom.core.session_store import RunRecord, SessionSnapshot, SessionStore, trim_history
from loom.state.base import State
from loom.state.claims import Claims
from loom.state.feedback_log import FeedbackLog
from loom.state.file_sessions import FileSessionStore
from loom.state.leases import Lease, Leases, StaleFencingToken
from loom.state.memory_sessions import InMemorySessionStore
from loom.state.memory_state import MemoryState
from loom.state.working import WorkingState


def state_from_url(url: str, **options: Any) -> State:
    """The state backend a URL names: ``memory://``, ``redis://`` / ``rediss://``, or a
    Redis Sentinel's primary (``redis+sentinel://HOST:26379[,HOST:PORT]/SERVICE[/DB]``).

    ``options`` go to the backend's constructor. Redis support is imported only here, so
    ``import loom`` never imports the redis package.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryState(**options)
    if scheme in ("redis", "rediss", "redis+sentinel", "rediss+sentinel"):
        from loom.state.redis_state import RedisState

        return RedisState(url, **options)
    shown = f"{scheme}://" if scheme else repr(url)
    raise ValueError(
        f"unsupported state URL {shown}: use memory:// or redis://host:6379/0 (rediss:// for "
        "TLS, redis+sentinel://host:26379/service for a Sentinel)"
    )


__all__ = [
    "Claims",
    "FeedbackLog",
    "FileSessionStore",
    "InMemorySessionStore",
    "Lease",
    "Leases",
    "MemoryState",
    "RunRecord",
    "SessionSnapshot",
    "SessionStore",
    "StaleFencingToken",
    "State",
    "WorkingState",
    "state_from_url",
    "trim_history",
]
