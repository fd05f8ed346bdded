"""The kernel's session store on Redis, and what the Redis backends share.

Keys of one session (``{prefix}`` is the store's prefix; the braces around the session id
are a Redis Cluster hash tag, so one session's keys share a slot; the append script also
updates the index, so this store itself targets a single Redis, primary and replicas)::

    {prefix}:sessions                  ZSET  session id -> creation time (the index)
    {prefix}:s:{<sid>}:info            HASH  created_at, updated_at, appended, run_seq
    {prefix}:s:{<sid>}:messages        LIST  message JSON, the newest max_messages
    {prefix}:s:{<sid>}:runs            HASH  run field (the run id packed: redis_ids.run_field)
                                             -> run record (compact JSON: redis_records)
    {prefix}:s:{<sid>}:run_order       ZSET  run field -> first-stored sequence number
    {prefix}:s:{<sid>}:outputs         ZSET  run sequence number (its run_order score) ->
                                             the transcript entry holding the output its
                                             record leaves out (redis_records)
    {prefix}:s:{<sid>}:meta            HASH  metadata key -> value JSON
    {prefix}:s:{<sid>}:context         STRING  the stored summary, handoff, calibration (JSON)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions

from loom.core.context import StoredContext
from loom.core.messages import Message
from loom.core.session_store import (
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_RUNS,
    RunRecord,
    SessionSnapshot,
    SessionStore,
    format_time,
    history_start,
    parse_time,
    utcnow,
)
from loom.state import redis_connect
from loom.state.base import StateUnavailable
from loom.state.redis_history import (
    DEFAULT_HOLD_BYTES,
    DEFAULT_HOLD_SECONDS,
    LOAD_SINCE,
    HeldHistories,
    HeldHistory,
    weight,
)
from loom.state.redis_ids import run_field, run_id_of
from loom.state.redis_records import decode_run, encode_run, is_last_reply, output_bytes

DEFAULT_SOCKET_TIMEOUT = 5.0
_STORE_PARTS = ("info", "messages", "runs", "run_order", "meta", "outputs")


def mask_url(url: str) -> str:
    """``url`` with its password (in the user info or a ``password=`` query) shown as ***."""
    head, sep, query = url.partition("?")
    parts = urlsplit(head)
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        masked = f"{userinfo.partition(':')[0]}:***@{hostport}"
        head = head.replace(f"//{parts.netloc}", f"//{masked}", 1)
    query = "&".join(
        f"{item.partition('=')[0]}=***"
        if item.partition("=")[0].lower().endswith("password")  # sentinel_password too
        else item
        for item in query.split("&")
    )
    return head + sep + query


def url_password(url: str) -> str | None:
    """The password a Redis URL carries, if any, so messages can be scrubbed of it."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if name.lower() == "password" and value:
            return unquote(value)
    return None


def describe(client: aioredis.Redis) -> str:
    """Where a client connects, for messages: no credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


def text(value: bytes | str) -> str:
    """A reply as text (clients here decode replies; this keeps the types honest)."""
    return value.decode() if isinstance(value, bytes) else value


def texts(values: Any) -> list[str]:
    """A list reply as text."""
    return [text(value) for value in values]


_FAILURES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # A replica that is being promoted refuses writes for a moment: still "unavailable".
    redis.exceptions.ReadOnlyError,
    OSError,
)
"""What ``unavailable`` turns into ``StateUnavailable``."""


class unavailable:  # lower case: called as the function it was, ``with unavailable(...):``
    """Turn connection failures into ``StateUnavailable`` naming ``where`` (the password,
    if given, masked in the message). A plain context manager rather than a generator one:
    it wraps every Redis call, and making and stepping a generator cost several times what
    the two methods here do."""

    __slots__ = ("password", "where")

    def __init__(self, where: str, password: str | None = None) -> None:
        self.where = where
        self.password = password

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: Any
    ) -> None:
        if isinstance(exc, _FAILURES):
            detail = str(exc) or type(exc).__name__
            if self.password:
                detail = detail.replace(self.password, "***")
            raise StateUnavailable(f"Redis at {self.where} is unavailable: {detail}") from exc


def connect(url: str, *, socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT) -> aioredis.Redis:
    """A client for ``url`` that answers text; no connection is made yet (pooled
    connections are checked before use, commands never re-sent: ``redis_connect``)."""
    return redis_connect.connect(url, socket_timeout=socket_timeout)


def session_key(prefix: str, session_id: str, part: str) -> str:
    """The key of one part of a session; the id is the cluster hash tag."""
    return f"{prefix}:s:{{{session_id}}}:{part}"


def as_dict(flat: Sequence[str]) -> dict[str, str]:
    """A script's HGETALL reply (a flat key, value list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# A run record stored without its output ('{"O":<entry>,...': loom.state.redis_records)
# read with the content of that transcript entry as its output ('{"o":<content>,...'), as
# it must be kept once the transcript drops the entry; unchanged when the list no longer
# holds the entry or it cannot be read (the output then reads as none).
INLINE_OUTPUT = """
local function entry_message(info, messages, entry)
  local appended = tonumber(redis.call('HGET', info, 'appended') or 0)
  local place = entry - (appended - redis.call('LLEN', messages))
  if place < 0 then return nil end
  return redis.call('LINDEX', messages, place) or nil
end

local function with_output(record, info, messages)
  local entry, rest = string.match(record, '^{"O":(%d+),()')
  if not entry then return record end
  local message = entry_message(info, messages, tonumber(entry))
  if not message then return record end
  local ok, decoded = pcall(cjson.decode, message)
  if not ok or type(decoded) ~= 'table' or type(decoded.content) ~= 'string' then
    return record
  end
  return '{"o":' .. cjson.encode(decoded.content) .. ',' .. string.sub(record, rest)
end
"""

# The whole append in one step: a crash can never leave a run record without its
# messages, and the bounds, the run order and the index are kept in the same step. A Lua
# function of the keys K (info, messages, runs, order, meta, index, outputs) and arguments
# A (see ``append_args``), so the run ending's script (``loom.state.redis_endings``) shares
# it. A record is stored under its run field (A[7], ``run_field``; A[10] is the run id).
# A record whose output is the last message appended with it leaves its output out
# (the A[9] bytes after its '{', '"o":<output>,') and says which entry holds it; before the
# transcript drops that entry the record takes the content back (``INLINE_OUTPUT``). Only
# a record the run order holds is found again, so one that is not keeps its output.
APPEND_FUNCTION = (
    INLINE_OUTPUT
    + """
local function seq_name(score)
  return string.format('%d', tonumber(score))
end

-- The field of a run's record: its packed name, unless an earlier version stored the record
-- under the run id as it is (a run suspended across an upgrade), which is kept.
local function run_field(runs, field, run_id)
  if field ~= run_id and redis.call('HEXISTS', runs, run_id) == 1 then return run_id end
  return field
end

local function append(K, A)
  local info, messages, runs, order, meta = K[1], K[2], K[3], K[4], K[5]
  local index, outputs = K[6], K[7]
  local n, ttl = tonumber(A[6]), tonumber(A[5])
  if redis.call('HSETNX', info, 'created_at', A[2]) == 1 then
    local t = redis.call('TIME')
    redis.call('ZADD', index, t[1] .. '.' .. string.format('%06d', tonumber(t[2])), A[1])
  end
  redis.call('HSET', info, 'updated_at', A[2])
  local appended = 0
  if n > 0 then
    -- One by one: unpack() of a long append would overflow Lua's stack.
    for i = 11, 10 + n do redis.call('RPUSH', messages, A[i]) end
    appended = redis.call('HINCRBY', info, 'appended', n)
  end
  if A[7] ~= '' then
    local field, record, cut = run_field(runs, A[7], A[10]), A[8], tonumber(A[9])
    local elided = cut > 0 and n > 0
      and (redis.call('HEXISTS', runs, field) == 0 or redis.call('ZSCORE', order, field))
    if elided then
      record = '{"O":' .. string.format('%d', appended - 1) .. ',' .. string.sub(record, 2 + cut)
    end
    if redis.call('HSET', runs, field, record) == 1 then
      redis.call('ZADD', order, redis.call('HINCRBY', info, 'run_seq', 1), field)
      local excess = redis.call('ZCARD', order) - tonumber(A[4])
      if excess > 0 then
        local dropped = redis.call('ZPOPMIN', order, excess)
        for i = 1, #dropped, 2 do
          redis.call('HDEL', runs, dropped[i])
          redis.call('ZREM', outputs, seq_name(dropped[i + 1]))
        end
      end
    end
    -- The outputs index names a record by its sequence number, shorter than its id.
    local seq = redis.call('ZSCORE', order, field)
    if seq then
      if elided then
        redis.call('ZADD', outputs, string.format('%d', appended - 1), seq_name(seq))
      else
        redis.call('ZREM', outputs, seq_name(seq))
      end
    end
  end
  if n > 0 then
    local keep_from = '(' .. (appended - tonumber(A[3]))
    for _, seq in ipairs(redis.call('ZRANGEBYSCORE', outputs, '-inf', keep_from)) do
      local run = redis.call('ZRANGEBYSCORE', order, seq, seq)[1]
      local record = run and redis.call('HGET', runs, run)
      if record then redis.call('HSET', runs, run, with_output(record, info, messages)) end
    end
    redis.call('ZREMRANGEBYSCORE', outputs, '-inf', keep_from)
    redis.call('LTRIM', messages, -tonumber(A[3]), -1)
  end
  for i = 11 + n, #A, 2 do redis.call('HSET', meta, A[i], A[i + 1]) end
  if ttl > 0 then
    for i = 1, 7 do
      if i ~= 6 then redis.call('PEXPIRE', K[i], ttl) end
    end
  end
  return tonumber(redis.call('HGET', info, 'appended') or 0)
end
"""
)
_APPEND = APPEND_FUNCTION + "return append(KEYS, ARGV)\n"
_MESSAGES_ARG = 10
"""Where the messages begin in ``append_args`` (A[11] in Lua)."""


# What a run needs, in one step: the info, the metadata, the stored context, and only the
# messages its summary does not cover (a long session's head is never sent or parsed).
def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisSessionStore(SessionStore):
    """Transcripts, runs and metadata of sessions in Redis, shared by every replica.

    ``client`` is a ``redis.asyncio.Redis`` made with ``decode_responses=True`` (closed by
    its owner) or a URL (the store makes and closes its own client). The list keeps the
    newest ``max_messages`` raw messages and ``load`` applies the window rule of
    ``trim_history`` to them, so a window never starts mid-turn. ``ttl`` (seconds) makes a
    session's keys expire that long after its last append; None keeps them. ``load_history``
    reads only the messages appended since the store last read the session, within
    ``hold_bytes`` of parsed transcripts held for ``hold_seconds`` after their last use.
    """

    def __init__(
        self,
        client: aioredis.Redis | str,
        *,
        prefix: str = "loom",
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_runs: int = DEFAULT_MAX_RUNS,
        ttl: float | None = None,
        hold_bytes: int = DEFAULT_HOLD_BYTES,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
    ) -> None:
        super().__init__(max_messages=max_messages, max_runs=max_runs)
        if isinstance(client, str):
            self._client, self._owned = connect(client), True
            self._where, self._password = mask_url(client), url_password(client)
        else:
            if not client.connection_pool.connection_kwargs.get("decode_responses"):
                raise ValueError("RedisSessionStore needs a client with decode_responses=True")
            self._client, self._owned = client, False
            self._where, self._password = describe(client), None
        self.prefix = prefix
        self.ttl = ttl
        self._index = f"{prefix}:sessions"
        self._append = self._client.register_script(_APPEND)
        self._load_since = self._client.register_script(LOAD_SINCE)
        self.held = HeldHistories(hold_bytes, hold_seconds)
        """The parsed transcripts this store holds (bounded by ``hold_bytes`` and by
        ``hold_seconds`` since each was last used)."""

    def _keys(self, session_id: str) -> list[str]:
        return [session_key(self.prefix, session_id, part) for part in _STORE_PARTS]

    def append_keys(self, session_id: str) -> list[str]:
        """The keys ``APPEND_FUNCTION`` is given for ``session_id``."""
        info, messages, runs, order, meta, outputs = self._keys(session_id)
        # The index sixth, as the scripts sharing APPEND_FUNCTION had it before ``outputs``.
        return [info, messages, runs, order, meta, self._index, outputs]

    async def load(self, session_id: str) -> SessionSnapshot | None:
        return await self._load(session_id, with_runs=True)

    async def load_history(self, session_id: str) -> SessionSnapshot | None:
        """The transcript without the run records and without the entries the stored
        summary covers (``first_entry`` says where the messages begin). Only what was
        appended since this store last read the session is read and parsed (see
        loom.state.redis_history); the summary's cut is applied to the held copy."""
        info_key, messages_key, _, _, meta_key, _ = self._keys(session_id)
        held = self.held.get(session_id)
        version = ("", -1) if held is None else (held.created_at, held.appended)
        keys = [info_key, messages_key, meta_key, self._context_key(session_id)]
        with unavailable(self._where, self._password):
            reply = await self._load_since(keys=keys, args=version)
        if not reply:
            self.held.drop(session_id)
            return None
        raw_info, raw_meta, mode, items, length, raw_context = reply
        info = as_dict(raw_info)
        appended = int(info.get("appended", 0))
        if held is not None and text(mode) == "since":
            held = held.extended(appended, items, int(length))
        else:
            held = HeldHistory.parsed(info["created_at"], appended, items)
        self.held.put(session_id, held)
        context = StoredContext.from_dict(json.loads(raw_context)) if raw_context else None
        kept = len(held.messages)
        # The entries the summary covers ("everything up to entry N") are not sent again;
        # the rest begins at a user message, where every summary ends.
        first = appended - kept
        upto = context.summary.upto if context is not None and context.summary else 0
        start = min(max(upto - first, 0), kept)
        messages = list(held.messages[start:])
        head = history_start(messages, self.max_messages, cut=appended > kept or start > 0)
        del messages[:head]
        return SessionSnapshot(
            session_id=session_id,
            metadata={key: json.loads(value) for key, value in as_dict(raw_meta).items()},
            messages=messages,
            runs=[],
            created_at=parse_time(info["created_at"]),
            updated_at=parse_time(info["updated_at"]),
            first_entry=first + start + head,
            context=context,
        )

    async def _load(self, session_id: str, *, with_runs: bool) -> SessionSnapshot | None:
        info_key, messages_key, runs_key, order_key, meta_key, _ = self._keys(session_id)
        with unavailable(self._where, self._password):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(info_key)
                pipe.lrange(messages_key, 0, -1)
                pipe.hgetall(meta_key)
                pipe.get(self._context_key(session_id))
                if with_runs:
                    pipe.hgetall(runs_key)
                    pipe.zrange(order_key, 0, -1)
                info, raw_messages, raw_meta, raw_context, *run_parts = await pipe.execute()
        if not info:
            return None
        messages = [Message.from_dict(json.loads(item)) for item in raw_messages]
        # Fewer kept than ever appended: the list lost its head, so the window must start
        # at a user message (the same rule the in-memory store applies as it trims).
        appended = int(info.get("appended", 0))
        cut = appended > len(messages)
        first_entry = appended - len(messages)
        head = history_start(messages, self.max_messages, cut=cut)
        del messages[:head]
        runs: list[RunRecord] = []
        if run_parts:
            raw_runs, order = run_parts
            runs = [
                decode_run(run_id_of(field), session_id, raw_runs[field], raw_messages, first_entry)
                for field in order
                if field in raw_runs
            ]
        return SessionSnapshot(
            session_id=session_id,
            metadata={key: json.loads(value) for key, value in raw_meta.items()},
            messages=messages,
            runs=runs[-self.max_runs :],
            created_at=parse_time(info["created_at"]),
            updated_at=parse_time(info["updated_at"]),
            first_entry=first_entry + head,
            context=None
            if raw_context is None
            else StoredContext.from_dict(json.loads(raw_context)),
        )

    def _context_key(self, session_id: str) -> str:
        return session_key(self.prefix, session_id, "context")

    async def load_context(self, session_id: str) -> StoredContext | None:
        with unavailable(self._where, self._password):
            raw = await self._client.get(self._context_key(session_id))
        return None if raw is None else StoredContext.from_dict(json.loads(raw))

    async def save_context(self, session_id: str, context: StoredContext) -> None:
        # Its own key: the transcript list is never rewritten, and the run-ending script
        # that appends to it does not need to know of compaction.
        ttl_ms = None if self.ttl is None else max(1, int(self.ttl * 1000))
        with unavailable(self._where, self._password):
            await self._client.set(
                self._context_key(session_id), dumps(context.to_dict()), px=ttl_ms
            )

    async def append(
        self,
        session_id: str,
        *,
        messages: Sequence[Message] = (),
        run: RunRecord | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        args = self.append_args(session_id, messages=messages, run=run, metadata=metadata)
        with unavailable(self._where, self._password):
            appended = int(await self._append(keys=self.append_keys(session_id), args=args))
        held = self.held.peek(session_id)
        if held is not None and messages and appended == held.appended + len(messages):
            # Nobody appended in between: the mirror takes these very messages, unparsed.
            encoded = args[_MESSAGES_ARG : _MESSAGES_ARG + len(messages)]
            weights = [weight(str(item)) for item in encoded]
            self.held.put(
                session_id, held.with_messages(appended, messages, weights, self.max_messages)
            )

    def append_args(
        self,
        session_id: str,
        *,
        messages: Sequence[Message] = (),
        run: RunRecord | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[str | int]:
        """The arguments ``APPEND_FUNCTION`` is given for an append."""
        # Everything is encoded before anything is sent: a value JSON cannot hold fails here.
        encoded = [dumps(message.to_dict()) for message in messages]
        pairs = [part for key, value in (metadata or {}).items() for part in (key, dumps(value))]
        ttl_ms = 0 if self.ttl is None else max(1, int(self.ttl * 1000))
        # The output is stored once: in the transcript, when it is the last reply.
        last = messages[-1] if messages else None
        cut = 0 if run is None or not is_last_reply(run, last) else output_bytes(run)
        return [
            session_id,
            format_time(utcnow()),
            self.max_messages,
            self.max_runs,
            ttl_ms,
            len(encoded),
            "" if run is None else run_field(run.run_id),
            "" if run is None else encode_run(run),
            cut,
            "" if run is None else run.run_id,
            *encoded,
            *pairs,
        ]

    async def delete(self, session_id: str) -> None:
        self.held.drop(session_id)
        with unavailable(self._where, self._password):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(*self._keys(session_id), self._context_key(session_id))
                pipe.zrem(self._index, session_id)
                await pipe.execute()

    async def list_sessions(self) -> list[str]:
        with unavailable(self._where, self._password):
            ids = texts(await self._client.zrange(self._index, 0, -1))
            if self.ttl is None or not ids:
                return ids
            # Sessions can expire: drop their index entries as they are found.
            async with self._client.pipeline(transaction=False) as pipe:
                for session_id in ids:
                    pipe.exists(session_key(self.prefix, session_id, "info"))
                alive = await pipe.execute()
            gone = {session_id for session_id, live in zip(ids, alive, strict=True) if not live}
            if gone:
                await self._client.zrem(self._index, *gone)
        return [session_id for session_id in ids if session_id not in gone]

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()
