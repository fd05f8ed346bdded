"""The in-memory session store, and the bounded per-session state the file store reuses."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loom.core.context import StoredContext
from loom.core.messages import Message
from loom.core.session_store import (
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_RUNS,
    RunRecord,
    SessionSnapshot,
    SessionStore,
    format_time,
    history_start,
    parse_time,
    utcnow,
)


@dataclass(slots=True)
class SessionState:
    """One session's live, bounded state: what a snapshot is made from.

    Messages are immutable values and are shared with snapshots; runs and metadata are
    mutable, so they are copied on the way in and on the way out.
    """

    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    # Set once older messages were dropped: from then on the window must start at a user
    # message, even while a long turn that overflowed it is still being appended.
    cut: bool = False
    appended: int = 0
    """Messages ever appended: the window's first message is entry ``appended - len``."""
    context: StoredContext | None = None

    def apply(
        self,
        messages: Sequence[Message],
        run: RunRecord | None,
        metadata: Mapping[str, Any] | None,
        at: datetime,
        *,
        max_messages: int,
        max_runs: int,
    ) -> None:
        """Append, upsert and merge, then trim back to the bounds."""
        # Copies first: if one fails, the state is left untouched.
        stored_run = None if run is None else run.copy()
        merged = copy.deepcopy(dict(metadata)) if metadata else {}
        self.messages.extend(messages)
        self.appended += len(messages)
        if stored_run is not None:
            # Assigning to an existing key keeps its place, so an update never reorders runs.
            self.runs[stored_run.run_id] = stored_run
        self.metadata.update(merged)
        self.updated_at = at
        self.bound(max_messages, max_runs)

    def bound(self, max_messages: int, max_runs: int) -> None:
        """Drop the oldest messages and runs beyond the bounds."""
        overflow = len(self.messages) > max_messages
        self.cut = self.cut or overflow
        if overflow or (self.cut and self.messages and self.messages[0].role != "user"):
            # In place: dropping the head costs far less than copying a full window.
            del self.messages[: history_start(self.messages, max_messages, cut=True)]
        while len(self.runs) > max_runs:
            del self.runs[next(iter(self.runs))]

    def snapshot(self, session_id: str) -> SessionSnapshot:
        """An independent copy of the state."""
        return SessionSnapshot(
            session_id=session_id,
            metadata=copy.deepcopy(self.metadata),
            messages=list(self.messages),
            runs=[run.copy() for run in self.runs.values()],
            created_at=self.created_at,
            updated_at=self.updated_at,
            first_entry=self.appended - len(self.messages),
            context=None if self.context is None else self.context.copy(),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict holding everything needed to restore the state exactly."""
        return {
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "metadata": self.metadata,
            "messages": [message.to_dict() for message in self.messages],
            "runs": [run.to_dict() for run in self.runs.values()],
            "cut": self.cut,
            "appended": self.appended,
            "context": None if self.context is None else self.context.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionState:
        """The inverse of :meth:`to_dict`."""
        runs = [RunRecord.from_dict(item) for item in data.get("runs", ())]
        messages = [Message.from_dict(item) for item in data.get("messages", ())]
        context = data.get("context")
        return cls(
            created_at=parse_time(data["created_at"]),
            updated_at=parse_time(data["updated_at"]),
            metadata=dict(data.get("metadata") or {}),
            messages=messages,
            runs={run.run_id: run for run in runs},
            cut=bool(data.get("cut", False)),
            appended=int(data.get("appended", len(messages))),
            context=None if context is None else StoredContext.from_dict(context),
        )


class InMemorySessionStore(SessionStore):
    """A session store in a dict: for tests and single-process use; lost on exit.

    Trimming happens on every append, so memory stays bounded by the store's limits.
    """

    def __init__(
        self, *, max_messages: int = DEFAULT_MAX_MESSAGES, max_runs: int = DEFAULT_MAX_RUNS
    ) -> None:
        super().__init__(max_messages=max_messages, max_runs=max_runs)
        self._sessions: dict[str, SessionState] = {}

    async def load(self, session_id: str) -> SessionSnapshot | None:
        state = self._sessions.get(session_id)
        return None if state is None else state.snapshot(session_id)

    async def append(
        self,
        session_id: str,
        *,
        messages: Sequence[Message] = (),
        run: RunRecord | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        at = utcnow()
        state = self._sessions.get(session_id) or SessionState(created_at=at, updated_at=at)
        state.apply(
            messages, run, metadata, at, max_messages=self.max_messages, max_runs=self.max_runs
        )
        # Registered only after apply succeeded, so a failed first append creates nothing.
        self._sessions.setdefault(session_id, state)

    async def load_context(self, session_id: str) -> StoredContext | None:
        state = self._sessions.get(session_id)
        return None if state is None or state.context is None else state.context.copy()

    async def save_context(self, session_id: str, context: StoredContext) -> None:
        at = utcnow()
        state = self._sessions.setdefault(session_id, SessionState(created_at=at, updated_at=at))
        state.context = context.copy()

    async def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def list_sessions(self) -> list[str]:
        return list(self._sessions)
