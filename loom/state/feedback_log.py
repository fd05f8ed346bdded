"""The feedback events kept per session and for all sessions: the ``FeedbackLog`` port."""

from __future__ import annotations

from abc import ABC, abstractmethod

DEFAULT_MAX_FEEDBACK = 10_000
"""Feedback events kept in the stream of all sessions."""
DEFAULT_MAX_SESSION_FEEDBACK = 200
"""Feedback events kept per session: one bound per session, so it must be small."""


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
