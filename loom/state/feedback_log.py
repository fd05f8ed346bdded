"""The feedback events kept per session and for all sessions: the ``FeedbackLog`` port."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

DEFAULT_MAX_FEEDBACK = 10_000
"""Feedback events kept in the stream of all sessions."""
DEFAULT_MAX_SESSION_FEEDBACK = 200
"""Feedback events kept per session: one bound per session, so it must be small."""


_HELD: ContextVar[tuple[str, list[str]] | None] = ContextVar("loom_held_feedback", default=None)


@contextmanager
def held_feedback(session_id: str) -> Iterator[list[str]]:
    """Events of ``session_id`` recorded in this context (and in tasks started in it, such
    as a run's) are kept in the list instead of being written: a worker writes them with
    the run's ending, in the same step (``RunEnding.feedback``), not one write each."""
    events: list[str] = []
    token = _HELD.set((session_id, events))
    try:
        yield events
    finally:
        _HELD.reset(token)


def hold(session_id: str, event_json: str) -> bool:
    """Keep the event for the run ending under way in this context, if it is of that run's
    session (``held_feedback``); False when it must be written now."""
    held = _HELD.get()
    if held is None or held[0] != session_id:
        return False
    held[1].append(event_json)
    return True


class FeedbackLog(ABC):
    """Two bounded streams of feedback events (JSON): one per session, one of all.

    A backend implements both methods and sets the two bounds.
    """

    max_feedback: int = DEFAULT_MAX_FEEDBACK
    max_session_feedback: int = DEFAULT_MAX_SESSION_FEEDBACK

    @abstractmethod
    async def add_feedback(self, session_id: str, event_json: str) -> None:
        """Append a feedback event (JSON) to the session's stream and to the stream of all
        sessions. The session's stream keeps the newest ``max_session_feedback``; the stream
        of all about the newest ``max_feedback`` (Redis trims it by whole stream nodes, so
        it may run up to about a hundred entries over)."""

    @abstractmethod
    async def read_feedback(self, session_id: str | None = None, limit: int = 50) -> list[str]:
        """The newest ``limit`` feedback events of one session (or of all), newest last."""
