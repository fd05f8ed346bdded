"""A third backend, in the tests only: ``Claims`` and ``Leases`` on stdlib ``sqlite3``.

It proves the recipe in docs/architecture.md: a port is implemented by its abstract
methods alone (seven for ``Claims``, six for ``Leases``), and the port's contract tests
then run on it unchanged. Handles opened on the same file share the data the way replicas
share Redis; every write is one ``BEGIN IMMEDIATE`` transaction, so it is atomic across
processes too. Time is the wall clock, the one clock processes on a host share.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from loom.state.claims import Claims, Taken
from loom.state.leases import HeldLease, Lease, Leases, StaleFencingToken

SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS markers (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS leases (
    session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL,
    expires REAL NOT NULL, leased_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    session_id TEXT PRIMARY KEY, issued INTEGER NOT NULL DEFAULT 0,
    fence INTEGER NOT NULL DEFAULT 0
);
"""


class SqliteClaimsAndLeases(Claims, Leases):
    """``Claims`` and ``Leases`` in one SQLite file (``path``)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        # Autocommit mode: transactions are the explicit ones below.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5)
        self._db.executescript(SCHEMA)
        self._clock = clock

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that holds the write lock from its first read."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _one(self, sql: str, *args: object) -> tuple[object, ...] | None:
        row: tuple[object, ...] | None = self._db.execute(sql, args).fetchone()
        return row

    # -- Claims ------------------------------------------------------------------------

    def _holder(self, key: str, now: float) -> str | None:
        row = self._one("SELECT owner FROM claims WHERE key = ? AND expires > ?", key, now)
        return None if row is None else str(row[0])

    def _take(self, key: str, owner: str, ttl: float, now: float) -> str | None:
        holder = self._holder(key, now)
        if holder is None:
            self._db.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, owner, now + ttl)
            )
        return holder

    async def claim(self, key: str, owner: str, ttl: float) -> str | None:
        with self._write():
            return self._take(key, owner, ttl, self._clock())

    async def claimed(self, key: str) -> str | None:
        return self._holder(key, self._clock())

    async def forget(self, key: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM claims WHERE key = ?", (key,))

    def _marker(self, key: str, now: float) -> str | None:
        row = self._one(
            "SELECT value FROM markers WHERE key = ? AND (expires IS NULL OR expires > ?)",
            key,
            now,
        )
        return None if row is None else str(row[0])

    def _set_marker(self, key: str, value: str, ttl: float | None, now: float) -> None:
        expires = None if ttl is None else now + ttl
        self._db.execute("INSERT OR REPLACE INTO markers VALUES (?, ?, ?)", (key, value, expires))

    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._write():
            self._set_marker(key, value, ttl, self._clock())

    async def marker(self, key: str) -> str | None:
        return self._marker(key, self._clock())

    async def claim_unless_marked(
        self, marker: str, key: str, owner: str, ttl: float
    ) -> Taken | None:
        with self._write():
            now = self._clock()
            value = self._marker(marker, now)
            if value is not None:
                return ("marked", value)
            holder = self._take(key, owner, ttl, now)
            return None if holder is None else ("claimed", holder)

    async def mark_and_release(
        self, marker: str, value: str, ttl: float, key: str, owner: str
    ) -> None:
        with self._write() as db:
            now = self._clock()
            self._set_marker(marker, value, ttl, now)
            db.execute(
                "DELETE FROM claims WHERE key = ? AND owner = ? AND expires > ?", (key, owner, now)
            )

    # -- Leases ------------------------------------------------------------------------

    def _live(self, session_id: str, now: float) -> Lease | None:
        row = self._one(
            "SELECT owner, token FROM leases WHERE session_id = ? AND expires > ?",
            session_id,
            now,
        )
        return None if row is None else Lease(session_id, str(row[0]), int(str(row[1])))

    def _tokens(self, session_id: str) -> tuple[int, int]:
        """The newest token issued for the session and the newest a write was checked with."""
        row = self._one("SELECT issued, fence FROM tokens WHERE session_id = ?", session_id)
        return (0, 0) if row is None else (int(str(row[0])), int(str(row[1])))

    async def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        with self._write() as db:
            now = self._clock()
            if self._live(session_id, now) is not None:
                return None
            issued, fence = self._tokens(session_id)
            token = issued + 1
            db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                (session_id, owner, token, now + ttl, now),
            )
            db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)", (session_id, token, fence))
        return Lease(session_id, owner, token)

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        with self._write() as db:
            now = self._clock()
            renewed = db.execute(
                "UPDATE leases SET expires = ? WHERE session_id = ? AND owner = ? AND token = ?"
                " AND expires > ?",
                (now + ttl, lease.session_id, lease.owner, lease.token, now),
            )
            return renewed.rowcount == 1

    async def release_lease(self, lease: Lease) -> bool:
        with self._write() as db:
            released = db.execute(
                "DELETE FROM leases WHERE session_id = ? AND owner = ? AND token = ?"
                " AND expires > ?",
                (lease.session_id, lease.owner, lease.token, self._clock()),
            )
            return released.rowcount == 1

    async def lease_holder(self, session_id: str) -> Lease | None:
        return self._live(session_id, self._clock())

    async def held_leases(self, limit: int = 100) -> list[HeldLease]:
        now = self._clock()
        rows = self._db.execute(
            "SELECT session_id, owner, token, leased_at FROM leases WHERE expires > ?"
            " ORDER BY leased_at LIMIT ?",
            (now, max(limit, 0)),
        ).fetchall()
        return [HeldLease(Lease(sid, owner, token), now - at) for sid, owner, token, at in rows]

    async def check_fence(self, session_id: str, token: int) -> None:
        with self._write() as db:
            issued, fence = self._tokens(session_id)
            # Older than the newest issued is stale too: that lease was lost already.
            newest = max(issued, fence)
            if token < newest:
                raise StaleFencingToken(
                    f"session {session_id}: fencing token {token} is older than {newest}"
                )
            db.execute(
                "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)", (session_id, issued, token)
            )
