"""The ``State`` port on Redis: what every role of every replica agrees on.

Keys (``{prefix}`` is the state's prefix, ``<sid>`` a session id in braces, the Redis
Cluster hash tag that keeps one session's keys in one slot)::

    {prefix}:dedupe:<key>              STRING  "1", expires after the dedupe TTL
    {prefix}:ready                     ZSET    session id -> first-marked server time
    {prefix}:leases                    ZSET    session id -> server time (ms) its lease
                                               expires; expired entries are pruned on every
                                               acquire and release, and the key expires
                                               with the longest lease written to it
    {prefix}:marker:<key>              STRING  a named value (``set_marker``), maybe expiring
    {prefix}:s:{<sid>}:pending         LIST    signal JSON, oldest first, bounded
    {prefix}:s:{<sid>}:inflight        LIST    signals a run took, bounded
    {prefix}:s:{<sid>}:risks           HASH    risk key -> text
    {prefix}:s:{<sid>}:risk_order      LIST    risk keys, oldest first
    {prefix}:s:{<sid>}:decisions       LIST    decision JSON, newest last, bounded
    {prefix}:s:{<sid>}:feedback        STREAM  event=<feedback JSON>, max_session_feedback
    {prefix}:feedback                  STREAM  session=<id> event=<JSON>, of all sessions,
                                               about max_feedback
    {prefix}:s:{<sid>}:interrupts      LIST    ["signal id", "reason"] JSON, bounded
    {prefix}:s:{<sid>}:lease           STRING  "<token>:<owner>", expires with the lease
    {prefix}:s:{<sid>}:leased_at       STRING  server time the lease was taken, expires with it
    {prefix}:s:{<sid>}:token           STRING  the newest lease token issued
    {prefix}:s:{<sid>}:fence           STRING  the newest token a write was checked with

plus the session store's keys (``loom.state.redis_sessions``). Each per-session key expires
``session_ttl`` after its last write, so abandoned sessions do not accumulate.

Lease tokens stay strictly increasing even though the token key can expire: a token is
``max(last token + 1, server time in microseconds)``, so a session whose keys expired
starts again above every token it was ever issued (as long as the Redis server's clock
does not go back by more than ``session_ttl``). The token key's expiry is never shorter
than a lease's, so it cannot vanish while a lease exists.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import AbstractContextManager

from loom.state import redis_scripts as scripts
from loom.state.base import (
    DEFAULT_MAX_DECISIONS,
    DEFAULT_MAX_FEEDBACK,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_RISKS,
    DEFAULT_MAX_SESSION_FEEDBACK,
    DecisionContext,
    HeldLease,
    Lease,
    SignalRecord,
    StaleFencingToken,
    State,
    StateUnavailable,
    Taken,
)
from loom.state.redis_sessions import (
    DEFAULT_SOCKET_TIMEOUT,
    RedisSessionStore,
    connect,
    mask_url,
    session_key,
    text,
    texts,
    unavailable,
    url_password,
)
from loom.state.sessions import DEFAULT_MAX_MESSAGES, DEFAULT_MAX_RUNS

DEFAULT_SESSION_TTL = 7 * 24 * 3600.0
MAX_LEASE_SCAN = 10_000
"""Leases ``held_leases`` reads at most: every lease held now (one per running session
across all workers), so it can order them by how long each has been held."""
MIN_REDIS_VERSION = (6, 2)  # LMOVE, and BLPOP with a fractional timeout


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisState(State):
    """The ``State`` port on Redis at ``url`` (``redis://`` or ``rediss://``).

    ``url`` holds the URL with its password masked; keys live under ``prefix``. Per-session
    keys expire ``session_ttl`` seconds after their last write (None: never); transcripts
    (``sessions``, a ``RedisSessionStore`` on the same client) after ``transcript_ttl``.
    ``wait_interrupt`` blocks one pooled connection while it waits (raise the pool with
    ``?max_connections=`` in the URL for many concurrent runs); its waits are cut into
    pieces shorter than ``socket_timeout``. Connection failures raise ``StateUnavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "loom",
        max_pending: int = DEFAULT_MAX_PENDING,
        max_decisions: int = DEFAULT_MAX_DECISIONS,
        max_risks: int = DEFAULT_MAX_RISKS,
        max_feedback: int = DEFAULT_MAX_FEEDBACK,
        max_session_feedback: int = DEFAULT_MAX_SESSION_FEEDBACK,
        session_ttl: float | None = DEFAULT_SESSION_TTL,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_runs: int = DEFAULT_MAX_RUNS,
        transcript_ttl: float | None = None,
        socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT,
    ) -> None:
        if min(max_pending, max_decisions, max_risks, max_feedback, max_session_feedback) < 1:
            raise ValueError("state bounds must be at least 1")
        super().__init__(
            max_pending=max_pending,
            max_decisions=max_decisions,
            max_risks=max_risks,
            max_feedback=max_feedback,
            max_session_feedback=max_session_feedback,
        )
        self.url = mask_url(url)
        self.prefix = prefix
        self.session_ttl = session_ttl
        self._password = url_password(url)
        self._client = connect(url, socket_timeout=socket_timeout)
        # The URL may set its own socket_timeout; a blocking wait must stay under it, with
        # room for Redis, which may answer a timed-out BLPOP up to 1/hz (100 ms) late.
        effective = self._client.connection_pool.connection_kwargs.get("socket_timeout")
        self._block_slice = (
            None if effective is None else max(0.05, min(0.8 * effective, effective - 0.25))
        )
        self._keep_ms = 0 if session_ttl is None else _ms(session_ttl)
        self.sessions = RedisSessionStore(
            self._client,
            prefix=prefix,
            max_messages=max_messages,
            max_runs=max_runs,
            ttl=transcript_ttl,
        )
        register = self._client.register_script
        self._take_pending = register(scripts.TAKE_PENDING)
        self._claim = register(scripts.CLAIM)
        self._claim_many = register(scripts.CLAIM_MANY)
        self._decision_contexts = register(scripts.DECISION_CONTEXTS)
        self._record_signals = register(scripts.RECORD_SIGNALS)
        self._claim_unless_marked = register(scripts.CLAIM_UNLESS_MARKED)
        self._mark_and_release = register(scripts.MARK_AND_RELEASE)
        self._set_risk = register(scripts.SET_RISK)
        self._mark_ready = register(scripts.MARK_READY)
        self._acquire = register(scripts.ACQUIRE)
        self._renew = register(scripts.RENEW)
        self._release = register(scripts.RELEASE)
        self._check_fence = register(scripts.CHECK_FENCE)
        self._held_leases = register(scripts.HELD_LEASES)

    # -- lifecycle ---------------------------------------------------------------------

    def _guard(self) -> AbstractContextManager[None]:
        return unavailable(self.url, self._password)

    def _key(self, session_id: str, part: str) -> str:
        return session_key(self.prefix, session_id, part)

    async def start(self) -> None:
        """Check that Redis answers and is recent enough; raise StateUnavailable if not."""
        with self._guard():
            await self._client.ping()
            server = await self._client.info("server")
        version = str(server.get("redis_version", "0"))
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts < MIN_REDIS_VERSION:
            wanted = ".".join(map(str, MIN_REDIS_VERSION))
            raise StateUnavailable(f"Redis at {self.url} is {version}; Loom needs {wanted}+")

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> bool:
        try:
            with self._guard():
                return bool(await self._client.ping())
        except StateUnavailable:
            return False

    # -- dedupe ------------------------------------------------------------------------

    async def remember(self, key: str, ttl: float) -> bool:
        if ttl <= 0:
            return True  # remembered for no time at all
        with self._guard():
            created = await self._client.set(
                f"{self.prefix}:dedupe:{key}", "1", nx=True, px=_ms(ttl)
            )
        return bool(created)

    async def claim(self, key: str, owner: str, ttl: float) -> str | None:
        with self._guard():
            held = await self._claim(keys=[f"{self.prefix}:dedupe:{key}"], args=[owner, _ms(ttl)])
        return None if held is None else str(held)

    async def claimed(self, key: str) -> str | None:
        with self._guard():
            held = await self._client.get(f"{self.prefix}:dedupe:{key}")
        return None if held is None else str(held)

    async def forget(self, key: str) -> None:
        with self._guard():
            await self._client.delete(f"{self.prefix}:dedupe:{key}")

    # -- markers -----------------------------------------------------------------------

    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._guard():
            await self._client.set(
                f"{self.prefix}:marker:{key}", value, px=None if ttl is None else _ms(ttl)
            )

    async def marker(self, key: str) -> str | None:
        with self._guard():
            value = await self._client.get(f"{self.prefix}:marker:{key}")
        return None if value is None else text(value)

    # -- two-phase claims ----------------------------------------------------------------

    async def claim_unless_marked(
        self, marker: str, key: str, owner: str, ttl: float
    ) -> Taken | None:
        keys = [f"{self.prefix}:marker:{marker}", f"{self.prefix}:dedupe:{key}"]
        with self._guard():
            taken = await self._claim_unless_marked(keys=keys, args=[owner, _ms(ttl)])
        if taken is None:
            return None
        what, value = texts(taken)
        return ("marked" if what == "marked" else "claimed", value)

    async def mark_and_release(
        self, marker: str, value: str, ttl: float, key: str, owner: str
    ) -> None:
        keys = [f"{self.prefix}:marker:{marker}", f"{self.prefix}:dedupe:{key}"]
        with self._guard():
            await self._mark_and_release(keys=keys, args=[value, _ms(ttl), owner])

    # -- working state -----------------------------------------------------------------

    async def _push(self, key: str, value: str, bound: int) -> int:
        """Append to a bounded list and refresh its expiry, in one transaction."""
        with self._guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, value)
                pipe.ltrim(key, -bound, -1)
                if self._keep_ms:
                    pipe.pexpire(key, self._keep_ms)
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
        return contexts

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

    async def record_signals(self, records: Sequence[SignalRecord]) -> None:
        if not records:
            return
        batch = [
            [
                self._key(record.session_id, ""),
                record.session_id,
                record.pending_json or "",
                json.dumps(list(record.interrupt)) if record.interrupt is not None else "",
                record.ready,
                record.decision_json,
            ]
            for record in records
        ]
        args = [self._keep_ms, self.max_pending, self.max_decisions]
        with self._guard():
            await self._record_signals(
                keys=[f"{self.prefix}:ready"], args=[*args, json.dumps(batch, ensure_ascii=False)]
            )

    async def claim_many(self, claims: Sequence[tuple[str, str, float]]) -> list[str | None]:
        if not claims:
            return []
        keys = [f"{self.prefix}:dedupe:{key}" for key, _, _ in claims]
        args: list[str | int] = []
        for _, owner, ttl in claims:
            args += [owner, _ms(ttl)]
        with self._guard():
            held = await self._claim_many(keys=keys, args=args)
        return [None if value is None else str(value) for value in held]

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
        await self._push(self._key(session_id, "decisions"), decision_json, self.max_decisions)

    async def decisions(self, session_id: str, limit: int = 50) -> list[str]:
        if limit <= 0:
            return []
        return await self._range(self._key(session_id, "decisions"), -limit)

    # -- feedback ----------------------------------------------------------------------

    async def add_feedback(self, session_id: str, event_json: str) -> None:
        stream = self._key(session_id, "feedback")
        # The stream of all is long: MAXLEN ~ trims whole stream nodes, cheap, and the bound
        # holds within a node. A session's stream is short (every session has one, so its
        # bound is small): trimmed exactly, one entry per XADD.
        with self._guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    f"{self.prefix}:feedback",
                    {"session": session_id, "event": event_json},
                    maxlen=self.max_feedback,
                    approximate=True,
                )
                pipe.xadd(
                    stream,
                    {"event": event_json},
                    maxlen=self.max_session_feedback,
                    approximate=False,
                )
                if self._keep_ms:
                    pipe.pexpire(stream, self._keep_ms)
                await pipe.execute()

    async def read_feedback(self, session_id: str | None = None, limit: int = 50) -> list[str]:
        if limit <= 0:
            return []
        key = f"{self.prefix}:feedback" if session_id is None else self._key(session_id, "feedback")
        with self._guard():
            entries = await self._client.xrevrange(key, count=limit)
        return [text(fields["event"]) for _, fields in reversed(entries or []) if fields]

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

    # -- leases ------------------------------------------------------------------------

    def _lease_keys(self, session_id: str) -> list[str]:
        """The lease, its token, the leases index and when the lease was taken."""
        return [
            self._key(session_id, "lease"),
            self._key(session_id, "token"),
            f"{self.prefix}:leases",
            self._key(session_id, "leased_at"),
        ]

    def _token_keep_ms(self, ttl: float) -> int:
        # The token key must outlive any lease issued with it.
        return 0 if self._keep_ms == 0 else max(self._keep_ms, _ms(ttl))

    async def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        args: list[str | int] = [owner, _ms(ttl), self._token_keep_ms(ttl), session_id]
        with self._guard():
            token = await self._acquire(keys=self._lease_keys(session_id), args=args)
        return None if token is None else Lease(session_id, owner, int(token))

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        args: list[str | int] = [
            f"{lease.token}:{lease.owner}",
            _ms(ttl),
            self._token_keep_ms(ttl),
            lease.session_id,
        ]
        with self._guard():
            renewed = await self._renew(keys=self._lease_keys(lease.session_id), args=args)
        return bool(renewed)

    async def release_lease(self, lease: Lease) -> bool:
        args = [f"{lease.token}:{lease.owner}", lease.session_id]
        with self._guard():
            released = await self._release(keys=self._lease_keys(lease.session_id), args=args)
        return bool(released)

    async def held_leases(self, limit: int = 100) -> list[HeldLease]:
        if limit <= 0:
            return []
        index = f"{self.prefix}:leases"
        with self._guard():
            # The index is ordered by expiry, not by age: read every live lease, then sort.
            candidates = texts(await self._client.zrange(index, 0, MAX_LEASE_SCAN - 1))
            if not candidates:
                return []
            keys = [index]
            for sid in candidates:
                keys += [self._key(sid, "lease"), self._key(sid, "leased_at")]
            found = texts(await self._held_leases(keys=keys, args=candidates))
        held: list[HeldLease] = []
        for at in range(0, len(found), 3):
            session_id, value, seconds = found[at : at + 3]
            token, _, owner = value.partition(":")
            held.append(HeldLease(Lease(session_id, owner, int(token)), float(seconds)))
        held.sort(key=lambda h: h.held_for, reverse=True)
        return held[:limit]

    async def lease_holder(self, session_id: str) -> Lease | None:
        with self._guard():
            value = await self._client.get(self._key(session_id, "lease"))
        if value is None:
            return None
        token, _, owner = text(value).partition(":")
        return Lease(session_id, owner, int(token))

    async def check_fence(self, session_id: str, token: int) -> None:
        keys = [self._key(session_id, "fence"), self._key(session_id, "token")]
        with self._guard():
            newer = await self._check_fence(keys=keys, args=[token, self._keep_ms])
        if newer is not None:
            raise StaleFencingToken(
                f"session {session_id}: fencing token {token} is older than {newer}"
            )

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
