"""``RedisState``: every ``State`` port on Redis, what every role of every replica agrees on.

Keys (``{prefix}`` is the state's prefix, ``<sid>`` a session id in braces, the Redis
Cluster hash tag that keeps one session's keys in one slot)::

    {prefix}:dedupe:<key>              STRING  "1", expires after the dedupe TTL
    {prefix}:ready                     ZSET    session id -> first-marked server time
    {prefix}:noticed                   ZSET    session id -> server time a work notice for
                                               it was asked, until a lease is taken on it
                                               (RECORD_SIGNALS; older than NOTICE_WINDOW: lost)
    {prefix}:activity                  ZSET    session id -> last decision or run ending
                                               (server seconds; entries past session_ttl
                                               pruned as decisions are recorded)
    {prefix}:leases                    ZSET    session id -> server time (ms) its lease
                                               expires; expired entries are pruned on every
                                               acquire and release, and the key expires
                                               with the longest lease written to it
    {prefix}:marker:<key>              STRING  a named value (``set_marker``), maybe expiring
    {prefix}:s:{<sid>}:pending         LIST    signal JSON, oldest first, bounded
    {prefix}:s:{<sid>}:inflight        LIST    signals a run took, bounded
    {prefix}:s:{<sid>}:risks           HASH    risk key -> text
    {prefix}:s:{<sid>}:risk_order      LIST    risk keys, oldest first
    {prefix}:s:{<sid>}:decisions       LIST    decision JSON, newest last, bounded (compact:
                                               loom.wire.decision_view reads it)
    {prefix}:s:{<sid>}:feedback        STREAM  e=<compact feedback JSON> (or event=<JSON>
                                               as it came: loom.state.redis_feedback),
                                               max_session_feedback
    {prefix}:feedback                  STREAM  session=<id> e=<compact JSON> (or event=),
                                               of all sessions, about max_feedback
    {prefix}:s:{<sid>}:interrupts      LIST    ["signal id", "reason"] JSON, bounded
    {prefix}:s:{<sid>}:outbox          HASH    run id -> replies a stored run owes, JSON
    {prefix}:recorded:<bucket>:<shard> HASH    signal id digest -> "": the signals recorded
                                               in a bucket of server time, each claim kept
                                               the claim TTL at least (``RECORD_SIGNALS``)
    {prefix}:dedupe:signal-recorded:<id> STRING "1": a claim ``claim`` took, or from before
                                               the claim hashes; still honoured
    {prefix}:s:{<sid>}:lease           STRING  "<token>:<owner>", expires with the lease
    {prefix}:s:{<sid>}:leased_at       STRING  server time the lease was taken, expires with it
    {prefix}:s:{<sid>}:token           STRING  the newest lease token issued
    {prefix}:s:{<sid>}:fence           STRING  the newest token a write was checked with

plus the session store's keys (``loom.state.redis_sessions``). The working state's keys
(ready, pending to interrupts) are read and written by ``loom.state.redis_working``. Each
per-session key expires ``session_ttl`` after its last write, so abandoned sessions do not
accumulate.

Lease tokens stay strictly increasing even though the token key can expire: a token is
``max(last token + 1, server time in microseconds)``, so a session whose keys expired
starts again above every token it was ever issued (as long as the Redis server's clock
does not go back by more than ``session_ttl``). The token key's expiry is never shorter
than a lease's, so it cannot vanish while a lease exists.
"""

from __future__ import annotations

from collections.abc import Sequence

from loom.core.session_store import DEFAULT_MAX_MESSAGES, DEFAULT_MAX_RUNS
from loom.state import redis_scripts as scripts
from loom.state.base import State, StateUnavailable
from loom.state.claims import Taken
from loom.state.feedback_log import DEFAULT_MAX_FEEDBACK, DEFAULT_MAX_SESSION_FEEDBACK
from loom.state.leases import HeldLease, Lease, StaleFencingToken
from loom.state.redis_endings import RedisRunEndings
from loom.state.redis_feedback import encode_feedback, stored_event
from loom.state.redis_history import DEFAULT_HOLD_BYTES
from loom.state.redis_pipelining import AutoPipeline
from loom.state.redis_rate_limits import RedisRateLimits
from loom.state.redis_session_index import RedisSessionIndex
from loom.state.redis_sessions import (
    DEFAULT_SOCKET_TIMEOUT,
    RedisSessionStore,
    connect,
    mask_url,
    text,
    texts,
    url_password,
)
from loom.state.redis_suspensions import RedisSuspensions
from loom.state.redis_working import milliseconds
from loom.state.working import (
    DEFAULT_MAX_DECISIONS,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_RISKS,
    RECORDED_PREFIX,
    RECORDED_TTL,
)

DEFAULT_SESSION_TTL = 7 * 24 * 3600.0
MAX_LEASE_SCAN = 10_000
"""Leases ``held_leases`` reads at most: every lease held now (one per running session
across all workers), so it can order them by how long each has been held."""
MIN_REDIS_VERSION = (6, 2)  # LMOVE, and BLPOP with a fractional timeout


class RedisState(RedisRunEndings, RedisSessionIndex, State):
    """Every ``State`` port on Redis at ``url`` (``redis://`` or ``rediss://``); the
    working state's part is ``RedisWorkingState``, the run endings' ``RedisRunEndings``.

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
        recorded_ttl: float = RECORDED_TTL,
        session_ttl: float | None = DEFAULT_SESSION_TTL,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_runs: int = DEFAULT_MAX_RUNS,
        transcript_ttl: float | None = None,
        hold_bytes: int = DEFAULT_HOLD_BYTES,
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
            recorded_ttl=recorded_ttl,
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
        self._keep_ms = 0 if session_ttl is None else milliseconds(session_ttl)
        self.sessions = RedisSessionStore(
            self._client,
            prefix=prefix,
            max_messages=max_messages,
            max_runs=max_runs,
            ttl=transcript_ttl,
            hold_bytes=hold_bytes,
        )
        self.rate_limits = RedisRateLimits(
            self._client, prefix=prefix, where=self.url, password=self._password
        )
        self.suspensions = RedisSuspensions(
            self._client,
            prefix=prefix,
            where=self.url,
            password=self._password,
            keep_ms=self._keep_ms,
        )
        self._register_working_scripts()
        self._register_ending_scripts(self.sessions)
        self._register_index_scripts()
        register = self._client.register_script
        self._claim = register(scripts.CLAIM)
        self._claim_many = register(scripts.CLAIM_MANY)
        self._claim_unless_marked = register(scripts.CLAIM_UNLESS_MARKED_EACH)
        self._mark_and_release = register(scripts.MARK_AND_RELEASE_EACH)
        self._acquire = register(scripts.ACQUIRE)
        self._renew = register(scripts.RENEW)
        self._release = register(scripts.RELEASE)
        self._check_fence = register(scripts.CHECK_FENCE)
        self._held_leases = register(scripts.HELD_LEASES)
        # The accept path's two calls: many requests make them in the same loop step, and
        # each step's calls of each go to Redis as one script call (``call_each``).
        self._batched = AutoPipeline(self._client)

    # -- lifecycle ---------------------------------------------------------------------

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
        await self._batched.close()
        await self._client.aclose()

    async def ping(self) -> bool:
        try:
            with self._guard():
                return bool(await self._client.ping())
        except StateUnavailable:
            return False

    # -- dedupe ------------------------------------------------------------------------

    async def claim(self, key: str, owner: str, ttl: float) -> str | None:
        with self._guard():
            held = await self._claim(
                keys=[f"{self.prefix}:dedupe:{key}"], args=[owner, milliseconds(ttl)]
            )
        return None if held is None else str(held)

    async def claimed(self, key: str) -> str | None:
        if key.startswith(RECORDED_PREFIX):
            return "1" if await self._recorded(key.removeprefix(RECORDED_PREFIX)) else None
        with self._guard():
            held = await self._client.get(f"{self.prefix}:dedupe:{key}")
        return None if held is None else str(held)

    async def forget(self, key: str) -> None:
        if key.startswith(RECORDED_PREFIX):
            # A signal's redelivery claim lives in the claim hashes (RECORD_SIGNALS).
            await self._forget_recorded(key.removeprefix(RECORDED_PREFIX))
            return
        with self._guard():
            await self._client.delete(f"{self.prefix}:dedupe:{key}")

    # -- markers -----------------------------------------------------------------------

    async def set_marker(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._guard():
            await self._client.set(
                f"{self.prefix}:marker:{key}", value, px=None if ttl is None else milliseconds(ttl)
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
            taken = await self._batched.call_each(
                self._claim_unless_marked, keys, [owner, milliseconds(ttl)]
            )
        if taken is None:
            return None
        what, value = texts(taken)
        return ("marked" if what == "marked" else "claimed", value)

    async def mark_and_release(
        self, marker: str, value: str, ttl: float, key: str, owner: str
    ) -> None:
        keys = [f"{self.prefix}:marker:{marker}", f"{self.prefix}:dedupe:{key}"]
        with self._guard():
            await self._batched.call_each(
                self._mark_and_release, keys, [value, milliseconds(ttl), owner]
            )

    async def claim_many(self, claims: Sequence[tuple[str, str, float]]) -> list[str | None]:
        if not claims:
            return []
        keys = [f"{self.prefix}:dedupe:{key}" for key, _, _ in claims]
        args: list[str | int] = []
        for _, owner, ttl in claims:
            args += [owner, milliseconds(ttl)]
        with self._guard():
            held = await self._claim_many(keys=keys, args=args)
        return [None if value is None else str(value) for value in held]

    # -- feedback ----------------------------------------------------------------------

    async def add_feedback(self, session_id: str, event_json: str) -> None:
        stream = self._key(session_id, "feedback")
        field, stored = encode_feedback(session_id, event_json)
        # The stream of all is long: MAXLEN ~ trims whole stream nodes, cheap, and the bound
        # holds within a node. A session's stream is short (every session has one, so its
        # bound is small): trimmed exactly, one entry per XADD.
        with self._guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    f"{self.prefix}:feedback",
                    {"session": session_id, field: stored},
                    maxlen=self.max_feedback,
                    approximate=True,
                )
                pipe.xadd(
                    stream,
                    {field: stored},
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
        events = []
        for _, fields in reversed(entries or []):
            if fields:
                found = {text(name): text(value) for name, value in fields.items()}
                events.append(stored_event(found.get("session", session_id or ""), found))
        return events

    # -- leases ------------------------------------------------------------------------

    def _lease_keys(self, session_id: str) -> list[str]:
        """The lease, its token, the leases index, when the lease was taken and the work
        notices out (which taking a lease ends)."""
        return [
            self._key(session_id, "lease"),
            self._key(session_id, "token"),
            f"{self.prefix}:leases",
            self._key(session_id, "leased_at"),
            f"{self.prefix}:noticed",
        ]

    async def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        args: list[str | int] = [owner, milliseconds(ttl), self._token_keep_ms(ttl), session_id]
        with self._guard():
            token = await self._acquire(keys=self._lease_keys(session_id), args=args)
        return None if token is None else Lease(session_id, owner, int(token))

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        args: list[str | int] = [
            f"{lease.token}:{lease.owner}",
            milliseconds(ttl),
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
