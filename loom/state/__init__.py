"""Session state: the store port and its in-memory and file implementations."""

from loom.state.file import FileSessionStore
from loom.state.memory import InMemorySessionStore
from loom.state.sessions import RunRecord, SessionSnapshot, SessionStore, trim_history

__all__ = [
    "FileSessionStore",
    "InMemorySessionStore",
    "RunRecord",
    "SessionSnapshot",
    "SessionStore",
    "trim_history",
]
