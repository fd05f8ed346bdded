"""The sessions by last activity: the ``SessionIndex`` port, what the operator console pages.

A session is active when an attention decision on one of its signals is recorded or one of
its runs ends; the backends note that time in the same step as the write (on Redis, inside
the scripts that record decisions and finish runs: no extra round trip). Paging works on
ranks (0 is the most recently active), so a page of a busy fleet of 100,000 sessions costs
one range read plus one batched read of the page's rows. Busy and suspended sessions are few
(one per running or waiting run), so a filter by status reads them whole and pages the rest
around them.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum


class SessionStatus(StrEnum):
    """What a session is doing now, as the console filters it."""

    BUSY = "busy"
    """A run holds the session's lease."""
    AWAITING = "awaiting"
    """A run is suspended, waiting for approvals."""
    IDLE = "idle"
    """Neither."""


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One row of the sessions page, read in one batch for a page."""

    session_id: str
    last_active: float | None
    """Unix time of the last decision or run ending (None: not in the index)."""
    last_decision: str | None
    """The newest decision (JSON), if any."""
    last_run: str | None
    """The most recently started run's record (JSON), if any."""


@dataclass(frozen=True, slots=True)
class SessionPage:
    """A page of session ids, most recently active first, and how many match the filter."""

    session_ids: list[str]
    total: int


class SessionIndex(ABC):
    """Sessions ordered by last activity; bounded as the sessions themselves are (an entry
    goes when its session's keys expire)."""

    @abstractmethod
    async def recent_sessions(self, offset: int, limit: int) -> list[tuple[str, float]]:
        """``(session id, last active unix time)`` from rank ``offset``, newest first."""

    @abstractmethod
    async def count_sessions(self) -> int:
        """How many sessions the index holds."""

    @abstractmethod
    async def activity_ranks(self, session_ids: Sequence[str]) -> dict[str, int]:
        """The rank of each session in the index (0: the most recent); absent ones left out."""

    @abstractmethod
    async def session_summaries(self, session_ids: Sequence[str]) -> list[SessionSummary]:
        """The rows of ``session_ids``, in that order, in one round trip."""

    async def sessions_page(
        self,
        offset: int,
        limit: int,
        *,
        only: Collection[str] | None = None,
        exclude: Collection[str] = (),
    ) -> SessionPage:
        """A page of the index: all sessions, or ``only`` those (a small set, such as the
        busy ones), or all but ``exclude`` (small too). A page past the end is empty."""
        offset, limit = max(offset, 0), max(limit, 0)
        if only is not None:
            ranks = await self.activity_ranks(list(only))
            # Sessions not yet in the index (a first run still going) come first.
            ordered = sorted(only, key=lambda sid: (ranks.get(sid, -1), sid))
            return SessionPage(ordered[offset : offset + limit], len(ordered))
        skipped = sorted((await self.activity_ranks(list(exclude))).values()) if exclude else []
        total = await self.count_sessions() - len(skipped)
        if limit == 0 or offset >= total:
            return SessionPage([], max(total, 0))
        # The rank of the offset-th session that is not skipped.
        rank = offset
        for skipped_rank in skipped:
            if skipped_rank <= rank:
                rank += 1
            else:
                break
        wanted = limit + len(skipped) - bisect.bisect_left(skipped, rank)
        left_out = set(exclude)
        rows = await self.recent_sessions(rank, wanted)
        ids = [sid for sid, _ in rows if sid not in left_out][:limit]
        return SessionPage(ids, total)


__all__ = ["SessionIndex", "SessionPage", "SessionStatus", "SessionSummary"]
