"""Deprecated path: the session store port lives in ``loom.core.session_store``."""

from loom.core.session_store import (
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_RUNS,
    RunRecord,
    SessionSnapshot,
    SessionStore,
    format_time,
    history_start,
    parse_time,
    trim_history,
    utcnow,
)

__all__ = [
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_RUNS",
    "RunRecord",
    "SessionSnapshot",
    "SessionStore",
    "format_time",
    "history_start",
    "parse_time",
    "trim_history",
    "utcnow",
]
