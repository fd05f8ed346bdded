"""Session leases and fencing tokens: the ``Leases`` port.

A worker runs a session only while it holds the session's lease; every lease carries a
token strictly greater than any issued before for that session, and writes of a run are
checked against the newest token seen (``check_fence``), so a worker that lost its lease
stops writing as soon as a newer one exists.
"""

from __future__ import annotations

import os
import secrets
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to run a session: held by ``owner`` with a strictly increasing ``token``."""

    session_id: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease held now, and for how long (seconds since it was acquired, on the backend's
    clock; renewals do not reset it)."""

    lease: Lease
    held_for: float


class StaleFencingToken(Exception):
    """A write carried a fencing token older than one already seen for the session."""


def replica_id() -> str:
    """This process among the replicas, as the owner of leases and claims: host, pid and a
    random part (pids repeat across pods)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases(ABC):
    """Who runs which session now, and the fence that stops a run that lost its turn.

    A backend implements all six methods; tokens must be strictly increasing per session,
    across releases and expiries.
    """

    @abstractmethod
    async def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the session for ``ttl`` seconds if nobody holds it (or the holder's lease
        expired). The token is strictly greater than any token issued before for it."""

    @abstractmethod
    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        """Extend a lease still held by its owner with that token; False if it was lost."""

    @abstractmethod
    async def release_lease(self, lease: Lease) -> bool:
        """Give the session up; False if the lease had already been lost."""

    @abstractmethod
    async def lease_holder(self, session_id: str) -> Lease | None:
        """The live lease of the session, or None."""

    @abstractmethod
    async def held_leases(self, limit: int = 100) -> list[HeldLease]:
        """Leases held now, longest held first (at most ``limit``): what a health check
        reads to find runs stuck past their timeout."""

    @abstractmethod
    async def check_fence(self, session_id: str, token: int) -> None:
        """Record ``token`` as the newest seen for the session; raise StaleFencingToken if a
        newer one was recorded before, or a newer lease was issued since (a worker that
        lost its lease must stop writing)."""
