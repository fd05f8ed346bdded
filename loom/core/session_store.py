"""The session store port: where a session's transcript, runs and metadata live between runs.

A store keeps a bounded window per session (the most recent messages and runs), so neither
memory nor the cost of loading a session grows with the session's age.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from loom.core.context import StoredContext
from loom.core.messages import Message

DEFAULT_MAX_MESSAGES = 2000
DEFAULT_MAX_RUNS = 200
CONTEXT_METADATA_KEY = "loom.context"
"""Where the base store keeps a session's ``StoredContext`` for stores that have no place of
their own for it (the memory, file and Redis stores keep it apart from the metadata)."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC with a fixed width, so records of equal content have equal size."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 timestamp that carries a UTC offset; return it in UTC."""
    return _aware(datetime.fromisoformat(text))


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"timestamp {value.isoformat()} has no timezone")
    return value.astimezone(UTC)


RUN_TRANSCRIPT = "transcript"
"""A run record's metadata key saying where the run's messages are in its session's
transcript: ``{"from": N, "count": k}``, entries counted from the session's first message
ever stored (``SessionSnapshot.first_entry`` numbers a loaded window the same way)."""


def usage_from(data: Mapping[str, Any]) -> dict[str, int | float]:
    """A stored usage read back: counts as integers, the cost as the amount it is."""
    return {str(k): float(v) if k == "cost_usd" else int(v) for k, v in data.items()}


@dataclass(slots=True)
class RunRecord:
    """What a store keeps about one run; upserted by ``run_id`` as the run progresses."""

    run_id: str
    session_id: str
    status: str
    output: str = ""
    error: str | None = None
    usage: dict[str, int | float] = field(default_factory=dict)
    """Token and request counts, and one amount: ``cost_usd`` (``Usage.to_dict``)."""
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalised here so every store compares and serialises the same instant the same way.
        self.started_at = _aware(self.started_at)
        if self.finished_at is not None:
            self.finished_at = _aware(self.finished_at)

    def copy(self) -> RunRecord:
        """An independent copy: changing it never changes the original."""
        return replace(
            self,
            usage=dict(self.usage),
            metadata=copy.deepcopy(self.metadata) if self.metadata else {},
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; timestamps as ISO-8601 UTC strings."""
        return {
            "run_id": self.run_id,
            "session_id": self.session_id,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "usage": dict(self.usage),
            "started_at": format_time(self.started_at),
            "finished_at": None if self.finished_at is None else format_time(self.finished_at),
            "metadata": copy.deepcopy(self.metadata) if self.metadata else {},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """The inverse of :meth:`to_dict`."""
        finished = data.get("finished_at")
        return cls(
            run_id=str(data["run_id"]),
            session_id=str(data["session_id"]),
            status=str(data["status"]),
            output=str(data.get("output", "")),
            error=data.get("error"),
            usage=usage_from(data.get("usage") or {}),
            started_at=parse_time(data["started_at"]),
            finished_at=None if finished is None else parse_time(finished),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(slots=True)
class SessionSnapshot:
    """A session as loaded: its bounded transcript window, recent runs and metadata."""

    session_id: str
    metadata: dict[str, Any]
    messages: list[Message]
    runs: list[RunRecord]
    created_at: datetime
    updated_at: datetime
    first_entry: int = 0
    """The number of ``messages[0]`` counted from the session's first message ever stored."""
    context: StoredContext | None = None
    """The stored summary, handoff and calibration (``load_history`` fills it in)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, e.g. for the ``/sessions/{id}`` API."""
        return {
            "session_id": self.session_id,
            "metadata": copy.deepcopy(self.metadata),
            "messages": [message.to_dict() for message in self.messages],
            "runs": [run.to_dict() for run in self.runs],
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }


def trim_history(messages: Sequence[Message], limit: int, *, cut: bool = False) -> list[Message]:
    """Return at most ``limit`` most recent messages, starting at a ``user`` message.

    A window that begins mid-turn would hand the model a tool result (or a tool call) whose
    partner was dropped, which providers reject; so when messages must be dropped the window
    starts at the first user message inside it, and is empty if it holds none. ``cut`` says
    ``messages`` already lost its beginning (an earlier trim), so the same rule applies even
    when it fits.
    """
    return list(messages[history_start(messages, limit, cut=cut) :])


def history_start(messages: Sequence[Message], limit: int, *, cut: bool = False) -> int:
    """The index where :func:`trim_history`'s window begins (``len(messages)`` if empty).

    Stores use it to drop the head of their window in place instead of copying the window.
    """
    if limit <= 0:
        return len(messages)
    start = max(len(messages) - limit, 0)
    if start == 0 and not cut:
        return 0
    for index in range(start, len(messages)):
        if messages[index].role == "user":
            return index
    return len(messages)


class SessionStore(ABC):
    """Port: keeps each session's transcript, runs and metadata, bounded per session.

    ``max_messages`` and ``max_runs`` bound what a loaded snapshot holds: the most recent
    messages (see :func:`trim_history`) and the most recently started runs.
    """

    def __init__(
        self, *, max_messages: int = DEFAULT_MAX_MESSAGES, max_runs: int = DEFAULT_MAX_RUNS
    ) -> None:
        if max_messages < 1 or max_runs < 1:
            raise ValueError("max_messages and max_runs must be at least 1")
        self.max_messages = max_messages
        self.max_runs = max_runs

    @abstractmethod
    async def load(self, session_id: str) -> SessionSnapshot | None:
        """The session's snapshot (an independent copy), or None if it does not exist."""

    async def load_history(self, session_id: str) -> SessionSnapshot | None:
        """Like ``load`` but ``runs`` may be left empty: what starting a run needs.

        It may also leave out the messages the stored summary covers (``first_entry`` then
        says where the messages begin). Stores where reading costs something override this.
        """
        return await self.load(session_id)

    @abstractmethod
    async def append(
        self,
        session_id: str,
        *,
        messages: Sequence[Message] = (),
        run: RunRecord | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Add new transcript messages, upsert ``run`` by run_id and merge ``metadata``.

        Creates the session if it is new and sets its ``updated_at``. The metadata merge is
        shallow (top-level keys replace); values must be JSON-serialisable.
        """

    async def load_context(self, session_id: str) -> StoredContext | None:
        """The session's stored summary, handoff and calibration, or None."""
        snapshot = await self.load(session_id)
        stored = None if snapshot is None else snapshot.metadata.get(CONTEXT_METADATA_KEY)
        return None if not isinstance(stored, dict) else StoredContext.from_dict(stored)

    async def save_context(self, session_id: str, context: StoredContext) -> None:
        """Replace the session's stored context. The transcript is not touched.

        This default keeps it under a metadata key; stores override it to keep it apart.
        """
        await self.append(session_id, metadata={CONTEXT_METADATA_KEY: context.to_dict()})

    @abstractmethod
    async def delete(self, session_id: str) -> None:
        """Forget the session; deleting an unknown session is not an error."""

    @abstractmethod
    async def list_sessions(self) -> list[str]:
        """The ids of all stored sessions, oldest first."""

    async def close(self) -> None:  # noqa: B027 - a no-op default, deliberately not abstract
        """Release the store's resources; stores that hold none need not override it."""

    async def __aenter__(self) -> SessionStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
