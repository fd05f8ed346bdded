"""Dedupe claims and markers: the ``Claims`` port.

A claim takes a key for an owner for a while (a signal's dedupe key, a reply being sent,
a cron fire); a marker is a small named value that outlives the work (a signal accepted, a
cron job's last fire time, a probe's status). The two-phase claim combines them: a short
claim while the work is under way, a marker once it is done.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

Taken = tuple[Literal["marked", "claimed"], str]
"""Why ``Claims.claim_unless_marked`` took nothing: ``("marked", marker value)`` or
``("claimed", owner holding the claim)``."""


class Claims(ABC):
    """Keys taken for an owner for a while, and named values; shared by every replica.

    A backend implements the seven abstract methods; ``claim_many`` has a default in terms
    of ``claim`` that a backend may override to claim a batch in one round trip.
    """

    @abstractmethod
    async def claim(self, key: str, owner: str, ttl: float) -> str | None:
        """Take ``key`` for ``owner`` for ``ttl`` seconds: None if it was free (now taken),
        else the owner that holds it. Lets a redelivered message tell itself (same owner)
        from a duplicate (another owner) after a crash."""

    @abstractmethod
    async def claimed(self, key: str) -> str | None:
        """The owner holding ``key`` (``claim``), or None when it is free or expired."""

    @abstractmethod
    async def forget(self, key: str) -> None:
        """Drop a claim (used when the work it guarded could not be done)."""

    async def claim_many(self, claims: Sequence[tuple[str, str, float]]) -> list[str | None]:
        """``claim(key, owner, ttl)`` for each claim, in order."""
        return [await self.claim(key, owner, ttl) for key, owner, ttl in claims]

    # -- markers: a namespace of their own, apart from the claimed keys ----------------
    @abstractmethod
    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store a small named value (e.g. a cron job's last fire time), replacing any
        earlier one; it expires after ``ttl`` seconds (None: never)."""

    @abstractmethod
    async def marker(self, key: str) -> str | None:
        """The value ``set_marker`` stored under ``key``, or None (never set or expired)."""

    # -- two-phase claims: a short claim while the work is under way, a marker once done --
    @abstractmethod
    async def claim_unless_marked(
        self, marker: str, key: str, owner: str, ttl: float
    ) -> Taken | None:
        """In one atomic step: unless the marker ``marker`` is set, ``claim(key, owner,
        ttl)``. None when the claim was taken; else ``("marked", value)`` (nothing claimed)
        or ``("claimed", holder)``. The gateway's accept path: marker = accepted, claim =
        being accepted right now."""

    @abstractmethod
    async def mark_and_release(
        self, marker: str, value: str, ttl: float, key: str, owner: str
    ) -> None:
        """In one atomic step: ``set_marker(marker, value, ttl)``, and release the claim
        ``key`` if ``owner`` still holds it (a claim that expired and was taken by another
        owner is left to that owner)."""
