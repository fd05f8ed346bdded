"""A session store in an append-only JSON-lines file that several processes can share.

Each ``append`` or ``delete`` writes one line, so its cost does not grow with the session's
history (rewriting a whole JSON file per save made the old SDK's saves grow to ~81 ms).
Lines are one of::

    {"op": "append", "sid": ..., "at": ..., "messages": [...], "run": {...}, "meta": {...}}
    {"op": "delete", "sid": ..., "at": ...}
    {"op": "session", "sid": ..., "created_at": ..., "messages": [...], "runs": [...], ...}
    {"op": "context", "sid": ..., "at": ..., "context": {"summary": ..., "handoff": ...}}

The last kind is written by compaction, which replaces the log with the live, bounded state.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from loom.core.context import StoredContext
from loom.core.messages import Message
from loom.core.session_store import (
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_RUNS,
    RunRecord,
    SessionSnapshot,
    SessionStore,
    format_time,
    parse_time,
    utcnow,
)
from loom.state.memory_sessions import SessionState

_log = logging.getLogger("loom.state.file")  # the name it was logged under before
_T = TypeVar("_T")
# Transcripts can hold anything a user or a tool said: readable by the owner only.
_MODE = 0o600
_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_Change = Callable[[dict[str, "SessionState"]], None]
# What reading the log yields: the index, the lines read and how many were corrupt.
_Replay = tuple[dict[str, SessionState], int, int]


class FileSessionStore(SessionStore):
    """A session store in an append-only JSON-lines log at ``path``.

    The log is read once, on first use, into an in-memory index of the bounded windows; after
    that ``load`` reads no file. Appends from several processes are safe (an exclusive
    ``flock`` around each write, and writers follow the file when another process compacts
    it), but an instance does not see what other processes append after it read the log,
    except through a compaction it runs itself: give each session one writing process.

    When the log holds more than ``compact_ratio`` times as many lines as the live state and
    more than ``compact_min_lines``, it is compacted on open and after an append. ``fsync``
    makes every append durable against power loss at the cost of a disk flush.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_runs: int = DEFAULT_MAX_RUNS,
        fsync: bool = False,
        compact_min_lines: int = 1000,
        compact_ratio: int = 4,
    ) -> None:
        super().__init__(max_messages=max_messages, max_runs=max_runs)
        self.path = Path(path)
        self._fsync = fsync
        self._compact_min_lines = compact_min_lines
        self._compact_ratio = compact_ratio
        self._fd: int | None = None
        self._sessions: dict[str, SessionState] | None = None
        self._lines = 0
        self._corrupt = 0
        # Orders this instance's writes, so the log and the index see appends in one order.
        self._lock = asyncio.Lock()

    @property
    def corrupt_lines(self) -> int:
        """Corrupt or incomplete lines skipped when the log was last read."""
        return self._corrupt

    async def load(self, session_id: str) -> SessionSnapshot | None:
        state = (await self._index()).get(session_id)
        return None if state is None else state.snapshot(session_id)

    async def append(
        self,
        session_id: str,
        *,
        messages: Sequence[Message] = (),
        run: RunRecord | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        record: dict[str, Any] = {"op": "append", "sid": session_id, "at": format_time(utcnow())}
        if messages:
            record["messages"] = [message.to_dict() for message in messages]
        if run is not None:
            record["run"] = run.to_dict()
        if metadata:
            record["meta"] = dict(metadata)
        await self._write_record(record)
        if self._needs_compaction(self._lines, len(await self._index())):
            await self.compact()

    async def load_context(self, session_id: str) -> StoredContext | None:
        state = (await self._index()).get(session_id)
        return None if state is None or state.context is None else state.context.copy()

    async def save_context(self, session_id: str, context: StoredContext) -> None:
        # One line, like an append: the transcript lines before it stay as they are.
        at = format_time(utcnow())
        await self._write_record(
            {"op": "context", "sid": session_id, "at": at, "context": context.to_dict()}
        )

    async def delete(self, session_id: str) -> None:
        # Written even for an id this instance does not know: another process may have it.
        await self._write_record({"op": "delete", "sid": session_id, "at": format_time(utcnow())})

    async def list_sessions(self) -> list[str]:
        return list(await self._index())

    async def compact(self) -> None:
        """Rewrite the log as the live, bounded state, atomically and under the file lock."""
        await self._index()
        await self._locked(self._compact_sync, self._install)

    async def close(self) -> None:
        """Close the file; a later call reopens it and reads the log again."""
        async with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._sessions = None

    # -- event-loop side -------------------------------------------------------------------

    async def _index(self) -> dict[str, SessionState]:
        if self._sessions is None:
            await self._locked(self._open_sync, self._install)
        assert self._sessions is not None
        return self._sessions

    async def _write_record(self, record: dict[str, Any]) -> None:
        # Decoded before writing, so a record the log could not replay fails here; and the
        # index applies the decoded record, exactly what a reopened store would read.
        line = _encode(record)
        change = _decode(json.loads(line), self.max_messages, self.max_runs)
        await self._index()
        await self._locked(partial(self._write, line), lambda _: self._commit(change))

    def _commit(self, change: _Change) -> None:
        if self._sessions is not None:
            change(self._sessions)
            self._lines += 1

    def _install(self, replay: _Replay | None) -> None:
        if replay is not None:
            self._sessions, self._lines, self._corrupt = replay

    async def _locked(self, work: Callable[[], _T], commit: Callable[[_T], None]) -> None:
        """Run blocking ``work`` in a thread under the lock, then ``commit`` its result.

        If the caller is cancelled meanwhile (an interrupted run), the work still finishes and
        is committed before the cancellation propagates, so the index never lacks a line.
        """
        async with self._lock:
            future = asyncio.ensure_future(asyncio.to_thread(work))
            cancelled = False
            while True:
                try:
                    result = await asyncio.shield(future)
                    break
                except asyncio.CancelledError:
                    if future.cancelled():
                        raise
                    cancelled = True
            commit(result)
        if cancelled:
            raise asyncio.CancelledError

    def _needs_compaction(self, lines: int, live: int) -> bool:
        return lines > self._compact_min_lines and lines > self._compact_ratio * max(live, 1)

    # -- worker-thread side (serialised by the lock) ----------------------------------------

    def _open_sync(self) -> _Replay | None:
        if self._sessions is not None:
            return None
        fd = self._lock_file()
        try:
            sessions, lines, corrupt = self._replay()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if self._needs_compaction(lines, len(sessions)):
            return self._compact_sync()
        return sessions, lines, corrupt

    def _lock_file(self) -> int:
        """Open the log if needed and lock it exclusively, following a replaced file."""
        while True:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, _FLAGS, _MODE)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            mine = os.fstat(self._fd)
            with contextlib.suppress(FileNotFoundError):
                current = os.stat(self.path)
                if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                    return self._fd
            # Another process compacted (replaced) the log since we opened it; a line written
            # to the old file would be lost, so reopen the path. Closing drops the lock.
            os.close(self._fd)
            self._fd = None

    def _write(self, line: bytes) -> None:
        fd = self._lock_file()
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A writer died mid-line: start ours on a fresh line so only that one is lost.
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _replay(self) -> _Replay:
        sessions: dict[str, SessionState] = {}
        lines = bad = first_bad = 0
        with open(self.path, "rb") as log:
            for raw in log:
                lines += 1
                if not raw.endswith(b"\n"):
                    # Only the last line can lack its newline: a write cut short by a crash.
                    _log.warning("%s: ignoring an incomplete last line", self.path)
                    bad += 1
                    break
                try:
                    _decode(json.loads(raw), self.max_messages, self.max_runs)(sessions)
                except (ValueError, KeyError, TypeError, AttributeError):
                    bad += 1
                    first_bad = first_bad or lines
        if first_bad:
            _log.warning("%s: skipped corrupt line(s), the first at line %d", self.path, first_bad)
        return sessions, lines, bad

    def _compact_sync(self) -> _Replay:
        fd = self._lock_file()
        try:
            # Read again under the lock: other processes may have appended since we did.
            sessions = self._replay()[0]
            tmp_fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(tmp_fd, "wb") as out:
                    for session_id, state in sessions.items():
                        out.write(_encode({"op": "session", "sid": session_id, **state.to_dict()}))
                    out.flush()
                    # Always synced: a crash must leave the old log or the whole new one.
                    os.fsync(out.fileno())
                os.chmod(tmp, stat.S_IMODE(os.fstat(fd).st_mode))
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        finally:
            # Our descriptor now names the replaced file; the next write reopens the path.
            os.close(fd)
            self._fd = None
        return sessions, len(sessions), 0


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _decode(record: Any, max_messages: int, max_runs: int) -> _Change:
    """Validate one log record (ValueError, KeyError, TypeError if bad); return its change."""
    if not isinstance(record, dict) or not isinstance(record.get("sid"), str):
        raise TypeError("a record must be an object with a string 'sid'")
    session_id: str = record["sid"]
    op = record.get("op")
    if op == "append":
        at = parse_time(record["at"])
        messages = [Message.from_dict(item) for item in record.get("messages", ())]
        run = RunRecord.from_dict(record["run"]) if "run" in record else None
        metadata = record.get("meta")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError("'meta' must be an object")

        def append(sessions: dict[str, SessionState]) -> None:
            state = sessions.get(session_id) or SessionState(created_at=at, updated_at=at)
            state.apply(messages, run, metadata, at, max_messages=max_messages, max_runs=max_runs)
            sessions.setdefault(session_id, state)

        return append
    if op == "delete":
        return lambda sessions: _discard(sessions, session_id)
    if op == "context":
        at = parse_time(record["at"])
        context = StoredContext.from_dict(record["context"])

        def remember(sessions: dict[str, SessionState]) -> None:
            state = sessions.setdefault(session_id, SessionState(created_at=at, updated_at=at))
            state.context = context

        return remember
    if op == "session":
        state = SessionState.from_dict(record)
        # The log may have been compacted by an instance with larger bounds than ours.
        state.bound(max_messages, max_runs)
        return lambda sessions: sessions.__setitem__(session_id, state)
    raise ValueError(f"unknown record op {op!r}")


def _discard(sessions: dict[str, SessionState], session_id: str) -> None:
    sessions.pop(session_id, None)
