"""``SessionRestorePolicy``: what of a stored session enters each run, on every load."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loom.core.context import Restored, RestorePort
from loom.core.messages import Message
from loom.runtime.history import message_chars


@dataclass(frozen=True, slots=True)
class SessionRestorePolicy(RestorePort):
    """Which part of the stored transcript and working state a run sees.

    The transcript window is taken from the newest end in whole turns (a turn begins with a
    user message), so no tool call is parted from its result; each bound that is set
    (``max_transcripts`` turns, ``max_messages``, ``max_chars``) must hold.
    """

    include_transcript: bool = True
    include_runtime_state: bool = True
    max_transcripts: int | None = None
    max_messages: int | None = None
    max_runtime_items: int | None = None
    max_chars: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_transcripts", "max_messages", "max_runtime_items", "max_chars"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")

    @classmethod
    def none(cls) -> SessionRestorePolicy:
        """Nothing stored enters a run: every run starts fresh."""
        return cls(include_transcript=False, include_runtime_state=False)

    @classmethod
    def transcript_only(cls) -> SessionRestorePolicy:
        """The transcript (and its summary), not the working state (handoff, evidence)."""
        return cls(include_runtime_state=False)

    @classmethod
    def runtime_state(cls) -> SessionRestorePolicy:
        """The working state and the summary, not the transcript's messages."""
        return cls(include_transcript=False)

    @classmethod
    def window(
        cls,
        max_transcripts: int | None = 8,
        max_messages: int | None = 24,
        max_runtime_items: int | None = 12,
        max_chars: int | None = 12_000,
    ) -> SessionRestorePolicy:
        """Both, bounded: the newest turns within every limit given."""
        return cls(
            max_transcripts=max_transcripts,
            max_messages=max_messages,
            max_runtime_items=max_runtime_items,
            max_chars=max_chars,
        )

    def restore(self, messages: Sequence[Message]) -> Restored:
        items = 0 if not self.include_runtime_state else self.max_runtime_items
        if not self.include_transcript:
            return Restored([], summary=self.include_runtime_state, runtime_items=items)
        return Restored(self._window(messages), summary=True, runtime_items=items)

    def _window(self, messages: Sequence[Message]) -> list[Message]:
        start = len(messages)
        turns = chars = 0
        index = len(messages)
        while index > 0:
            index -= 1
            chars += message_chars(messages[index])
            if self.max_messages is not None and len(messages) - index > self.max_messages:
                break
            if self.max_chars is not None and chars > self.max_chars:
                break
            if messages[index].role == "user":
                turns += 1
                if self.max_transcripts is not None and turns > self.max_transcripts:
                    break
                start = index
        return list(messages[start:])
