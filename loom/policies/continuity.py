"""``ContinuityPolicy.handoff()``: what a compacted session carries into its next request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loom.core.context import ContinuityPort, Handoff
from loom.core.messages import Message

MAX_FIELD_CHARS = 600
MAX_OPEN_ITEMS = 8


def _short(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class HandoffContinuity(ContinuityPort):
    """Builds a structured handoff from the run's goal, the summary and the recent turns."""

    max_open_items: int = MAX_OPEN_ITEMS

    def handoff(
        self, *, goal: str, summary: str, recent: Sequence[Message], risks: Sequence[str], upto: int
    ) -> Handoff:
        last_answer = next(
            (m.content for m in reversed(recent) if m.role == "assistant" and m.content), ""
        )
        state = last_answer or summary.rsplit("\n\n", 1)[-1]
        # A failed tool call is work not yet done: the next request should know of it.
        open_items = [
            f"{m.tool_name} failed: {_short(m.content, 200)}"
            for m in recent
            if m.role == "tool" and m.is_error
        ]
        return Handoff(
            goal=_short(goal),
            state=_short(state),
            open_items=tuple(open_items[-self.max_open_items :]),
            risks=tuple(_short(risk, 200) for risk in risks),
            upto=upto,
        )


class ContinuityPolicy:
    """Namespace of continuity policies."""

    @staticmethod
    def handoff(max_open_items: int = MAX_OPEN_ITEMS) -> HandoffContinuity:
        """Store a handoff (goal, state, open items, risks) whenever the session is
        compacted, and inject it into ``C_working`` of the next request."""
        return HandoffContinuity(max_open_items)
