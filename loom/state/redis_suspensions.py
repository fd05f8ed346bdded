"""``Suspensions`` on Redis: suspended runs every replica sees, fenced writes, atomic
decisions.

Keys (``<sid>`` in braces, the session's cluster hash tag)::

    {prefix}:s:{<sid>}:suspended           STRING  the checkpoint (JSON)
    {prefix}:s:{<sid>}:journal:<run id>    HASH    call id -> journal entry (JSON)
    {prefix}:suspended                     ZSET    session id -> when its run can resume
                                                   (ms: first expiry, or last decision)

Checkpoint and journal writes check the session's fencing token in the same script as
the write, so a worker that lost its lease cannot write late, even when its command lands
after a timeout. A decision is a compare-and-set on the checkpoint (``WATCH``): two
decisions at once cannot both win, and a decision is never lost to a concurrent write.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from loom.core.approvals import Approval, Decision
from loom.core.checkpoints import JournalEntry, RunCheckpoint
from loom.state.leases import StaleFencingToken
from loom.state.redis_sessions import session_key, unavailable
from loom.state.suspensions import (
    CLOSED_TTL,
    Suspensions,
    closed_approvals,
    decide_closed,
    decided,
    keeping_decisions,
    resumable_at,
)

# Fenced writes: KEYS[1] fence, KEYS[2] issued token; ARGV[1] token, ARGV[2] keep (ms).
# Answers 'stale:<newer token>' when the write's is stale (and writes nothing).
_FENCE = """
local token = tonumber(ARGV[1])
local newest = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'),
                        tonumber(redis.call('GET', KEYS[2]) or '0'))
if token < newest then return string.format('stale:%d', newest) end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
"""

# KEYS[3] checkpoint, KEYS[4] index; ARGV[3] checkpoint JSON, ARGV[4] session id,
# ARGV[5] resumable-at (ms), ARGV[6] the checkpoint's life (ms; 0: no expiry).
SAVE = (
    _FENCE
    + """
if tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[6])
else
  redis.call('SET', KEYS[3], ARGV[3])
end
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
return false
"""
)

# KEYS[3] checkpoint, KEYS[4] index, KEYS[5] journal, KEYS[6..] the approvals' closed keys;
# ARGV[3] the checkpoint as read, ARGV[4] session id, ARGV[5] closed TTL (ms), ARGV[6..]
# the approvals as they ended. Answers 'changed' (writing nothing) when the checkpoint is
# no longer the one read: a decision landed meanwhile, and the caller reads again.
DISCARD = (
    _FENCE
    + """
local stored = redis.call('GET', KEYS[3])
if stored ~= ARGV[3] then return 'changed' end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('DEL', KEYS[5])
for i = 6, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i], 'PX', ARGV[5])
end
return false
"""
)

# KEYS[3] journal (a run that never had a checkpoint here).
FORGET_JOURNAL = (
    _FENCE
    + """
redis.call('DEL', KEYS[3])
return false
"""
)

# KEYS[3] journal; ARGV[3] call id, ARGV[4] entry JSON.
JOURNAL = (
    _FENCE
    + """
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
return false
"""
)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


async def _watched(pipe: Any, key: str) -> RunCheckpoint | None:
    """The checkpoint at ``key``, read under WATCH: a write by anyone else before the
    transaction runs makes it fail (``WatchError``), and the caller reads again."""
    await pipe.watch(key)
    raw = await pipe.get(key)
    return None if raw is None else RunCheckpoint.from_dict(json.loads(raw))


def _unless_stale(answer: Any, session_id: str, token: int) -> str | None:
    """A fenced script's answer as text (None for none); ``StaleFencingToken`` when it
    says a newer token holds the session."""
    if answer is None:
        return None
    text = answer.decode() if isinstance(answer, bytes) else str(answer)
    if text.startswith("stale:"):
        raise StaleFencingToken(
            f"session {session_id}: fencing token {token} is older than {text[6:]}"
        )
    return text


class RedisSuspensions(Suspensions):
    """The port on Redis (see the module's key list)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        where: str,
        password: str | None = None,
        keep_ms: int = 0,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._where, self._password = where, password
        self._keep_ms = keep_ms
        self._save = client.register_script(SAVE)
        self._discard = client.register_script(DISCARD)
        self._forget_journal = client.register_script(FORGET_JOURNAL)
        self._journal = client.register_script(JOURNAL)

    def _key(self, session_id: str, part: str) -> str:
        return session_key(self._prefix, session_id, part)

    def _fence_keys(self, session_id: str) -> list[str]:
        return [self._key(session_id, "fence"), self._key(session_id, "token")]

    @property
    def _index(self) -> str:
        return f"{self._prefix}:suspended"

    async def _fenced(
        self, script: Any, session_id: str, token: int, keys: list[str], *args: Any
    ) -> str | None:
        """Run a fenced script; its answer (None for none), or ``StaleFencingToken``."""
        with unavailable(self._where, self._password):
            answer = await script(
                keys=[*self._fence_keys(session_id), *keys], args=[token, self._keep_ms, *args]
            )
        return _unless_stale(answer, session_id, token)

    async def save(self, checkpoint: RunCheckpoint, token: int) -> None:
        session_id = checkpoint.session_id
        key = self._key(session_id, "suspended")
        with unavailable(self._where, self._password):
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        # Compare-and-set against decisions (``decide``): one taken since
                        # the worker read the run is kept, never written over.
                        kept = keeping_decisions(checkpoint, await _watched(pipe, key))
                        pipe.multi()  # type: ignore[no-untyped-call]
                        await self._save(
                            keys=[*self._fence_keys(session_id), key, self._index],
                            args=[
                                token,
                                self._keep_ms,
                                json.dumps(kept.to_dict(), separators=(",", ":"), default=str),
                                session_id,
                                _ms(resumable_at(kept)),
                                self._life_ms(kept),
                            ],
                            client=pipe,
                        )
                        (answer,) = await pipe.execute()
                        break
                    except WatchError:
                        continue
        _unless_stale(answer, session_id, token)

    def _life_ms(self, checkpoint: RunCheckpoint) -> int:
        """The session's TTL, but never less than until its last approval expires (and a
        day to spare): a run must not vanish while people may still decide on it."""
        if not self._keep_ms:
            return 0
        latest = max((a.expires_at for a in checkpoint.approvals), default=None)
        if latest is None:
            return self._keep_ms
        left = _ms(latest) - int(time.time() * 1000) + 86_400_000
        return max(self._keep_ms, left)

    async def load(self, session_id: str) -> RunCheckpoint | None:
        with unavailable(self._where, self._password):
            raw = await self._client.get(self._key(session_id, "suspended"))
        return None if raw is None else RunCheckpoint.from_dict(json.loads(raw))

    async def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision,
        *,
        message: str | None = None,
        digest: str | None = None,
        by: str | None = None,
    ) -> tuple[Approval, bool]:
        key = self._key(session_id, "suspended")
        with unavailable(self._where, self._password):
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        stored = await _watched(pipe, key)
                        if stored is None or stored.approval(approval_id) is None:
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                            return await self._decide_closed(
                                session_id, approval_id, decision, digest
                            )
                        checkpoint, approval, fresh = decided(
                            stored,
                            approval_id,
                            decision,
                            session_id=session_id,
                            message=message,
                            digest=digest,
                            by=by,
                        )
                        if not fresh:
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                            return approval, False
                        pipe.multi()  # type: ignore[no-untyped-call]
                        body = json.dumps(checkpoint.to_dict(), separators=(",", ":"), default=str)
                        pipe.set(key, body, keepttl=True)
                        pipe.zadd(self._index, {session_id: _ms(resumable_at(checkpoint))})
                        await pipe.execute()
                        return approval, True
                    except WatchError:
                        continue  # written meanwhile: decide on what is there now

    async def discard(self, session_id: str, run_id: str, token: int) -> None:
        key = self._key(session_id, "suspended")
        journal = self._key(session_id, f"journal:{run_id}")
        while True:
            with unavailable(self._where, self._password):
                raw = await self._client.get(key)
            stored = None if raw is None else RunCheckpoint.from_dict(json.loads(raw))
            if stored is None or stored.run_id != run_id:
                await self._fenced(self._forget_journal, session_id, token, [journal])
                return
            closed = closed_approvals(stored)
            answer = await self._fenced(
                self._discard,
                session_id,
                token,
                [key, self._index, journal, *(self._closed_key(a.id) for a in closed)],
                raw,
                session_id,
                int(CLOSED_TTL * 1000),
                *(json.dumps(a.to_dict(), separators=(",", ":")) for a in closed),
            )
            if answer != "changed":
                return

    def _closed_key(self, approval_id: str) -> str:
        return f"{self._prefix}:approval:{approval_id}"

    async def _decide_closed(
        self, session_id: str, approval_id: str, decision: Decision, digest: str | None
    ) -> tuple[Approval, bool]:
        with unavailable(self._where, self._password):
            raw = await self._client.get(self._closed_key(approval_id))
        closed = None if raw is None else Approval.from_dict(json.loads(raw))
        return decide_closed(
            closed, decision, session_id=session_id, approval_id=approval_id, digest=digest
        )

    async def resumable(self, now: datetime, limit: int = 100) -> list[str]:
        with unavailable(self._where, self._password):
            found = await self._client.zrangebyscore(
                self._index, "-inf", _ms(now), start=0, num=limit
            )
        return [item.decode() if isinstance(item, bytes) else str(item) for item in found]

    async def count(self) -> int:
        with unavailable(self._where, self._password):
            return int(await self._client.zcard(self._index))

    async def journal(self, session_id: str, run_id: str) -> dict[str, JournalEntry]:
        with unavailable(self._where, self._password):
            raw = await self._client.hgetall(self._key(session_id, f"journal:{run_id}"))
        entries = {}
        for call_id, text in raw.items():
            data = json.loads(text)
            name = call_id.decode() if isinstance(call_id, bytes) else str(call_id)
            entries[name] = JournalEntry(
                name,
                finished=bool(data.get("finished")),
                content=data.get("content", ""),
                is_error=bool(data.get("is_error")),
            )
        return entries

    async def journal_started(self, session_id: str, run_id: str, call_id: str, token: int) -> None:
        await self._record(session_id, run_id, call_id, {"finished": False}, token)

    async def journal_finished(
        self,
        session_id: str,
        run_id: str,
        call_id: str,
        content: str,
        is_error: bool,
        token: int,
    ) -> None:
        entry = {"finished": True, "content": content, "is_error": is_error}
        await self._record(session_id, run_id, call_id, entry, token)

    async def _record(
        self, session_id: str, run_id: str, call_id: str, entry: dict[str, Any], token: int
    ) -> None:
        await self._fenced(
            self._journal,
            session_id,
            token,
            [self._key(session_id, f"journal:{run_id}")],
            call_id,
            json.dumps(entry, separators=(",", ":")),
        )


__all__ = ["RedisSuspensions"]
