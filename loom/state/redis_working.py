"""``WorkingState`` on Redis: the part of ``RedisState`` that holds a session's working state.

Keys (layout of every key: ``loom.state.redis_state``)::

    {prefix}:ready                     ZSET    session id -> first-marked server time
    {prefix}:activity                  ZSET    session id -> last decision or run ending
    {prefix}:due                       ZSET    session id -> when its put-off run is due
    {prefix}:due_first                 ZSET    session id -> its first put-off signal's time
    {prefix}:s:{<sid>}:runs            HASH    started, ended: server times of its last run
    {prefix}:s:{<sid>}:pending         LIST    signal JSON, oldest first, bounded
    {prefix}:s:{<sid>}:inflight        LIST    signals a run took, bounded
    {prefix}:s:{<sid>}:risks           HASH    risk key -> text
    {prefix}:s:{<sid>}:risk_order      LIST    risk keys, oldest first
    {prefix}:s:{<sid>}:decisions       LIST    decision JSON, newest last, bounded
    {prefix}:s:{<sid>}:interrupts      LIST    ["signal id", "reason"] JSON, bounded
    {prefix}:recorded:<bucket>:<shard> HASH    10-byte signal id digest -> "": the signals
                                               recorded in a bucket of server time, kept
                                               for the claim TTL after it (RECORD_SIGNALS)
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager

import redis.asyncio as aioredis

from loom.state import redis_scripts as scripts
from loom.state.redis_sessions import session_key, texts, unavailable
from loom.state.working import (
    NOTICE_WINDOW,
    DecisionContext,
    SignalRecord,
    WorkingState,
    recorded_key,
)

RECORDED_BUCKET = 6 * 3600.0
"""Seconds of server time whose recorded signals share a set of claim hashes (fixed, so
replicas with different claim TTLs share one layout): a claim lives between the claim TTL
and the claim TTL plus this, and a signal is looked up in TTL / this + 1 buckets."""


def recorded_digest(signal_id: str) -> tuple[str, bytes]:
    """A signal id's redelivery claim on Redis: its hash's shard (three hex digits, 4,096
    a bucket) and its field (ten bytes), both of one BLAKE2b digest of the id."""
    digest = hashlib.blake2b(signal_id.encode(), digest_size=12).digest()
    return digest[:2].hex()[:3], digest[2:]


def milliseconds(seconds: float) -> int:
    """A TTL in whole milliseconds, at least one (Redis refuses an expiry of 0)."""
    return max(1, round(seconds * 1000))


class RedisWorkingState(WorkingState):
    """``WorkingState`` on a Redis client; ``RedisState`` sets the attributes below and
    calls ``_register_working_scripts`` once it has its client."""

    url: str
    prefix: str
    _client: aioredis.Redis
    _password: str | None
    _keep_ms: int
    """Per-session keys expire this long after their last write (0: never)."""
    _block_slice: float | None
    """The longest a blocking wait may last (under the socket timeout)."""
    recorded_bucket: float = RECORDED_BUCKET
    """The width of a bucket of redelivery claims (``RECORDED_BUCKET``; shorter in tests)."""

    def _register_working_scripts(self) -> None:
        register = self._client.register_script
        self._take_pending = register(scripts.TAKE_PENDING)
        self._decision_contexts = register(scripts.DECISION_CONTEXTS)
        self._record_signals = register(scripts.RECORD_SIGNALS)
        self._set_risk = register(scripts.SET_RISK)
        self._mark_ready = register(scripts.MARK_READY)
        self._carry_over = register(scripts.CARRY_OVER)
        self._schedule = register(scripts.SCHEDULE)
        self._promote_due = register(scripts.PROMOTE_DUE)
        self._note_run = register(scripts.NOTE_RUN)
        self._run_times = register(scripts.RUN_TIMES)

    _unavailable: unavailable | None = None

    def _guard(self) -> AbstractContextManager[None]:
        # One for every call (it keeps nothing of a call): made once, not at each call.
        guard = self._unavailable
        if guard is None:
            guard = self._unavailable = unavailable(self.url, self._password)
        return guard

    def _key(self, session_id: str, part: str) -> str:
        return session_key(self.prefix, session_id, part)

    # -- working state -----------------------------------------------------------------

    async def _push(self, key: str, value: str, bound: int, active: str | None = None) -> int:
        """Append to a bounded list and refresh its expiry, in one transaction; ``active``:
        the session to note as active now (a decision)."""
        with self._guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, value)
                pipe.ltrim(key, -bound, -1)
                if self._keep_ms:
                    pipe.pexpire(key, self._keep_ms)
                if active is not None:
                    pipe.zadd(f"{self.prefix}:activity", {active: time.time()})
                length = (await pipe.execute())[0]
        return min(int(length), bound)

    async def decision_context(self, session_id: str) -> DecisionContext:
        return (await self.decision_contexts([session_id]))[session_id]

    async def decision_contexts(self, session_ids: Sequence[str]) -> dict[str, DecisionContext]:
        unique = list(dict.fromkeys(session_ids))
        if not unique:
            return {}
        keys = [
            self._key(session_id, part)
            for session_id in unique
            for part in ("risk_order", "risks", "lease", "pending")
        ]
        with self._guard():
            replies = await self._decision_contexts(keys=keys)
        contexts: dict[str, DecisionContext] = {}
        for session_id, (order, flat_risks, held, pending) in zip(unique, replies, strict=True):
            risk_texts = dict(zip(flat_risks[::2], flat_risks[1::2], strict=True))
            risks = {key: risk_texts[key] for key in order if key in risk_texts}
            contexts[session_id] = DecisionContext(risks, bool(held), int(pending))
        times = await self._times(unique)
        return {
            sid: dataclasses.replace(c, last_run_started_ago=times[sid][0],
                                     last_run_ended_ago=times[sid][1])
            for sid, c in contexts.items()
        }  # fmt: skip

    async def _times(self, session_ids: Sequence[str]) -> dict[str, tuple[float | None, ...]]:
        keys = [self._key(session_id, "runs") for session_id in session_ids]
        with self._guard():
            flat = texts(await self._run_times(keys=keys))
        ages = [float(value) if value else None for value in flat]
        return {sid: (ages[2 * i], ages[2 * i + 1]) for i, sid in enumerate(session_ids)}

    async def run_times(self, session_id: str) -> tuple[float | None, float | None]:
        started, ended = (await self._times([session_id]))[session_id]
        return started, ended

    async def note_run(self, session_id: str, *, ended: bool) -> None:
        with self._guard():
            await self._note_run(
                keys=[self._key(session_id, "runs")],
                args=["ended" if ended else "started", self._keep_ms],
            )

    def _due_keys(self) -> list[str]:
        return [f"{self.prefix}:due", f"{self.prefix}:due_first", f"{self.prefix}:ready"]

    async def schedule(self, session_id: str, delay: float, max_wait: float) -> None:
        with self._guard():
            await self._schedule(keys=self._due_keys(), args=[session_id, delay, max_wait])

    async def unschedule(self, session_id: str) -> None:
        with self._guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zrem(f"{self.prefix}:due", session_id)
                pipe.zrem(f"{self.prefix}:due_first", session_id)
                await pipe.execute()

    async def scheduled(self, session_id: str) -> bool:
        with self._guard():
            return await self._client.zscore(f"{self.prefix}:due", session_id) is not None

    async def promote_due(self, limit: int = 100) -> list[str]:
        if limit <= 0:
            return []
        with self._guard():
            return texts(await self._promote_due(keys=self._due_keys(), args=[limit]))

    async def record_signal(
        self,
        session_id: str,
        *,
        decision_json: str,
        pending_json: str | None = None,
        interrupt: tuple[str, str] | None = None,
        ready: bool = False,
    ) -> None:
        record = SignalRecord(session_id, decision_json, pending_json, interrupt, ready)
        await self.record_signals([record])

    async def record_signals(self, records: Sequence[SignalRecord]) -> set[str]:
        if not records:
            return set()
        batch: list[list[object]] = []
        digests: list[bytes] = []
        for record in records:
            claim: list[object] = ["", "", 0]
            if record.signal_id:
                shard, field = recorded_digest(record.signal_id)
                digests.append(field)
                claim = [self._dedupe_key(recorded_key(record.signal_id)), shard, len(digests)]
            batch.append([
                self._key(record.session_id, ""),
                record.session_id,
                record.pending_json or "",
                json.dumps(list(record.interrupt)) if record.interrupt is not None else "",
                record.ready,
                record.decision_json,
                *claim,
            ])  # fmt: skip
        args = [self._keep_ms, self.max_pending, self.max_decisions]
        batch_json = json.dumps(batch, ensure_ascii=False)
        with self._guard():
            quiet = await self._record_signals(
                keys=[
                    f"{self.prefix}:ready",
                    *self._due_keys()[:2],
                    f"{self.prefix}:activity",
                    f"{self.prefix}:noticed",
                ],
                args=[
                    *args,
                    batch_json,
                    milliseconds(self.recorded_ttl),
                    milliseconds(self.recorded_bucket),
                    self._recorded_prefix,
                    b"".join(digests),
                    milliseconds(NOTICE_WINDOW),
                ],
            )
        return set(texts(quiet))

    def _dedupe_key(self, key: str) -> str:
        return f"{self.prefix}:dedupe:{key}"

    @property
    def _recorded_prefix(self) -> str:
        return f"{self.prefix}:recorded:"

    def _recorded_places(self, signal_id: str) -> tuple[list[str], bytes]:
        """The claim hashes that may hold a signal's redelivery claim (every bucket a claim
        can still live in, one more either side for clocks apart), and its field."""
        shard, field = recorded_digest(signal_id)
        width = milliseconds(self.recorded_bucket)
        now = time.time() * 1000
        oldest = math.floor((now - milliseconds(self.recorded_ttl) - width) / width) - 1
        buckets = range(oldest, math.floor(now / width) + 2)
        return [f"{self._recorded_prefix}{bucket}:{shard}" for bucket in buckets], field

    async def _recorded(self, signal_id: str) -> bool:
        """Whether a signal's redelivery claim is held (``claimed(recorded_key(id))``)."""
        keys, field = self._recorded_places(signal_id)
        with self._guard():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.exists(self._dedupe_key(recorded_key(signal_id)))
                for key in keys:
                    pipe.hexists(key, field)
                return any(await pipe.execute())

    async def _forget_recorded(self, signal_id: str) -> None:
        """Drop a signal's redelivery claim (``forget(recorded_key(id))``)."""
        keys, field = self._recorded_places(signal_id)
        with self._guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._dedupe_key(recorded_key(signal_id)))
                for key in keys:
                    pipe.hdel(key, field)
                await pipe.execute()

    async def _range(self, key: str, start: int = 0) -> list[str]:
        with self._guard():
            return texts(await self._client.lrange(key, start, -1))

    async def add_pending(self, session_id: str, signal_json: str) -> int:
        return await self._push(self._key(session_id, "pending"), signal_json, self.max_pending)

    async def pending(self, session_id: str) -> list[str]:
        return await self._range(self._key(session_id, "pending"))

    async def pending_count(self, session_id: str) -> int:
        with self._guard():
            count: int = await self._client.llen(self._key(session_id, "pending"))
        return count

    async def take_pending(self, session_id: str) -> list[str]:
        keys = [self._key(session_id, part) for part in ("pending", "inflight", "interrupts")]
        with self._guard():
            taken: list[str] = await self._take_pending(
                keys=keys, args=[self.max_pending, self._keep_ms]
            )
        return taken

    async def in_flight(self, session_id: str) -> list[str]:
        return await self._range(self._key(session_id, "inflight"))

    async def finish_in_flight(self, session_id: str) -> None:
        with self._guard():
            await self._client.delete(self._key(session_id, "inflight"))

    async def carry_over(self, session_id: str, signals_json: Sequence[str], ready: bool) -> None:
        keys = [self._key(session_id, "pending"), self._key(session_id, "inflight")]
        args: list[str | int] = [self.max_pending, self._keep_ms, int(ready), session_id]
        args.extend(signals_json)
        with self._guard():
            await self._carry_over(keys=[*keys, f"{self.prefix}:ready"], args=args)

    async def set_risk(self, session_id: str, key: str, text: str) -> None:
        keys = [self._key(session_id, "risks"), self._key(session_id, "risk_order")]
        with self._guard():
            await self._set_risk(keys=keys, args=[key, text, self.max_risks, self._keep_ms])

    async def clear_risk(self, session_id: str, key: str) -> None:
        with self._guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key(session_id, "risks"), key)
                pipe.lrem(self._key(session_id, "risk_order"), 0, key)
                await pipe.execute()

    async def risks(self, session_id: str) -> dict[str, str]:
        with self._guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lrange(self._key(session_id, "risk_order"), 0, -1)
                pipe.hgetall(self._key(session_id, "risks"))
                order, texts = await pipe.execute()
        return {key: texts[key] for key in order if key in texts}

    async def record_decision(self, session_id: str, decision_json: str) -> None:
        await self._push(
            self._key(session_id, "decisions"), decision_json, self.max_decisions, session_id
        )

    async def decisions(self, session_id: str, limit: int | None = None) -> list[str]:
        if limit is not None and limit <= 0:
            return []
        return await self._range(self._key(session_id, "decisions"), 0 if limit is None else -limit)

    # -- sessions that need a run ------------------------------------------------------

    async def mark_ready(self, session_id: str) -> None:
        with self._guard():
            await self._mark_ready(keys=[f"{self.prefix}:ready"], args=[session_id])

    async def clear_ready(self, session_id: str) -> None:
        with self._guard():
            await self._client.zrem(f"{self.prefix}:ready", session_id)

    async def ready_sessions(self, limit: int = 100) -> list[str]:
        if limit <= 0:
            return []
        with self._guard():
            return texts(await self._client.zrange(f"{self.prefix}:ready", 0, limit - 1))

    # -- interrupts --------------------------------------------------------------------

    async def request_interrupt(self, session_id: str, signal_id: str, reason: str) -> None:
        request = json.dumps([signal_id, reason])
        await self._push(self._key(session_id, "interrupts"), request, self.max_pending)

    async def wait_interrupt(self, session_id: str, timeout: float) -> tuple[str, str] | None:
        key = self._key(session_id, "interrupts")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self._guard():
            while True:
                remaining = deadline - loop.time()
                if remaining < 0.01:
                    # BLPOP would read a timeout that rounds to 0 ms as "block forever".
                    value = await self._client.lpop(key)
                    break
                piece = (
                    remaining if self._block_slice is None else min(remaining, self._block_slice)
                )
                popped = await self._client.blpop([key], timeout=piece)
                if popped is not None:
                    value = popped[1]
                    break
        if not isinstance(value, (str, bytes)):
            return None
        signal_id, reason = json.loads(value)
        return str(signal_id), str(reason)
