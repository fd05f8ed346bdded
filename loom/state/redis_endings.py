"""``RunEndings`` on Redis: a run's ending in one fenced script keyed by its run id, and the
other steps of a leased run (``State.open_session``, ``take_run``, ``finish_and_continue``),
one script each.

Keys (layout of every key: ``loom.state.redis_state``)::

    {prefix}:s:{<sid>}:outbox          HASH    run id -> the run's replies, a JSON array

The ending's script checks the run id first (stored already: a retry whose first attempt
landed), then the fencing token, and only then writes: the transcript and the run record
(the session store's own append), the outbox entry, the release of the in-flight signals,
the run's end (for a minimum interval) and its feedback events. Then, in the same step, what
comes next: the next run's signals, or the lease let go of (``Then``).
"""

from __future__ import annotations

import json
from typing import Any

from loom.state.endings import RunEnding, RunEndings, RunFinish, RunTake, SessionOpening, Then
from loom.state.leases import Lease, StaleFencingToken
from loom.state.redis_feedback import encode_feedback
from loom.state.redis_run_scripts import OPEN_SESSION, RUN_FUNCTIONS, TAKE_RUN
from loom.state.redis_sessions import (
    APPEND_FUNCTION,
    RedisSessionStore,
    as_dict,
    session_key,
    text,
    texts,
)
from loom.state.redis_working import RedisWorkingState, milliseconds
from loom.state.working import KNOWN_ACTIONS, WAKING_ACTIONS

WAKING = ",".join(WAKING_ACTIONS)
KNOWN = ",".join(KNOWN_ACTIONS)

# KEYS: the append's seven (info, messages, runs, order, meta, index, outputs), then
# fence, token, inflight, outbox, the activity index. ARGV: token, keep (ms, 0 = no expiry), the
# replies as one JSON array, what comes after as one JSON object (see ``_after``), then the
# append's arguments. Answers the newer token (storing nothing) or {stored (1, or 0 when
# stored before), what next ('kept', 'taken', 'released', 'lost': the lease is no longer
# the caller's), ...}.
FINISH_RUN = (
    APPEND_FUNCTION
    + RUN_FUNCTIONS
    + """
local A = {}
for i = 5, #ARGV do A[i - 4] = ARGV[i] end
local after = cjson.decode(ARGV[4])
local token, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
local sid, S, P = after.sid, after.stem, after.prefix
local stored = 0
if redis.call('HEXISTS', KEYS[3], run_field(KEYS[3], A[7], A[10])) == 0 then
  local fence = tonumber(redis.call('GET', KEYS[8]) or '0')
  local issued = tonumber(redis.call('GET', KEYS[9]) or '0')
  local newest = math.max(fence, issued)
  if token < newest then return string.format('%d', newest) end
  if keep > 0 then
    redis.call('SET', KEYS[8], ARGV[1], 'PX', keep)
  else
    redis.call('SET', KEYS[8], ARGV[1])
  end
  append({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}, A)
  redis.call('DEL', KEYS[10])
  if ARGV[3] ~= '[]' then
    redis.call('HSET', KEYS[11], A[10], ARGV[3])
    if keep > 0 then redis.call('PEXPIRE', KEYS[11], keep) end
  end
  note_run(S, 'ended', keep)
  for _, event in ipairs(after.feedback) do
    redis.call('XADD', P .. ':feedback', 'MAXLEN', '~', after.max_feedback, '*',
      'session', sid, event[1], event[2])
    redis.call('XADD', S .. 'feedback', 'MAXLEN', after.max_session_feedback, '*',
      event[1], event[2])
  end
  if #after.feedback > 0 and keep > 0 then redis.call('PEXPIRE', S .. 'feedback', keep) end
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[12], t[1] .. '.' .. string.format('%06d', tonumber(t[2])), A[1])
  stored = 1
end
if after['then'] == 'keep' then return {stored, 'kept'} end
-- A retry whose first attempt landed may have let the lease go already.
if redis.call('GET', S .. 'lease') ~= after.lease then return {stored, 'lost'} end
-- Signals in flight here were taken by a first attempt that landed (the ending empties the
-- list): whoever runs next must get them, so they count as work whatever they are.
local taken = redis.call('LLEN', S .. 'inflight') > 0
local work = taken or has_work(S, P, sid, action_set(after.waking), action_set(after.known))
if after['then'] == 'take' and work then
  return {stored, 'taken', take(S, P, sid, tonumber(after.max_pending), keep)}
end
let_go(S, P, sid, work)
return {stored, 'released', work and 1 or 0}
"""
)


def _take(reply: Any) -> RunTake:
    signals, order, risks = reply
    found = as_dict(texts(risks))
    return RunTake(tuple(texts(signals)), {key: found[key] for key in texts(order) if key in found})


class RedisRunEndings(RedisWorkingState, RunEndings):
    """``RunEndings`` and a leased run's steps on the working state's Redis client;
    ``RedisState`` calls ``_register_ending_scripts`` once it has its client and stores."""

    max_feedback: int
    max_session_feedback: int

    def _register_ending_scripts(self, transcripts: RedisSessionStore) -> None:
        self._transcripts = transcripts
        register = self._client.register_script
        self._finish_run = register(FINISH_RUN)
        self._open_session = register(OPEN_SESSION)
        self._take_run = register(TAKE_RUN)

    def _outbox(self, session_id: str) -> str:
        return session_key(self.prefix, session_id, "outbox")

    def _stem(self, session_id: str) -> str:
        return session_key(self.prefix, session_id, "")

    def _token_keep_ms(self, ttl: float) -> int:
        # The token key must outlive any lease issued with it.
        return 0 if self._keep_ms == 0 else max(self._keep_ms, milliseconds(ttl))

    async def open_session(self, session_id: str, owner: str, ttl: float) -> SessionOpening | None:
        keys = [
            self._key(session_id, "lease"),
            self._key(session_id, "token"),
            f"{self.prefix}:leases",
            self._key(session_id, "leased_at"),
            f"{self.prefix}:noticed",
        ]
        args: list[str | int] = [
            owner,
            milliseconds(ttl),
            self._token_keep_ms(ttl),
            session_id,
            self._stem(session_id),
            self.prefix,
            self._keep_ms,
            self.max_pending,
            WAKING,
            KNOWN,
        ]
        with self._guard():
            reply = await self._open_session(keys=keys, args=args)
        if reply is None:
            return None
        token, outbox, left, what = reply[0], reply[1], reply[2], text(reply[3])
        lease = Lease(session_id, owner, int(token))
        unsent = {run_id: json.loads(r) for run_id, r in as_dict(texts(outbox)).items()}
        return SessionOpening(
            lease,
            unsent,
            tuple(texts(left)),
            suspended=what == "suspended",
            take=_take(reply[4]) if what == "taken" else None,
            released=what == "released",
        )

    async def take_run(self, lease: Lease) -> RunTake | None:
        sid = lease.session_id
        keys = [self._key(sid, "fence"), self._key(sid, "token")]
        stem, bound = self._stem(sid), self.max_pending
        args: list[str | int] = [lease.token, self._keep_ms, sid, stem, self.prefix, bound,
                                 WAKING, KNOWN]  # fmt: skip
        with self._guard():
            reply = await self._take_run(keys=keys, args=args)
        if isinstance(reply, (str, bytes)):
            raise StaleFencingToken(
                f"session {sid}: fencing token {lease.token} is older than {text(reply)}"
            )
        return _take(reply[1]) if text(reply[0]) == "taken" else None

    async def finish_run(self, token: int, ending: RunEnding) -> bool:
        return (await self._finish(token, ending, then="keep", lease="")).stored

    async def finish_and_continue(self, lease: Lease, ending: RunEnding, then: Then) -> RunFinish:
        held = f"{lease.token}:{lease.owner}"
        return await self._finish(lease.token, ending, then=then, lease=held)

    async def _finish(self, token: int, ending: RunEnding, *, then: Then, lease: str) -> RunFinish:
        sid = ending.session_id
        keys = [
            *self._transcripts.append_keys(sid),
            session_key(self.prefix, sid, "fence"),
            session_key(self.prefix, sid, "token"),
            session_key(self.prefix, sid, "inflight"),
            self._outbox(sid),
            f"{self.prefix}:activity",
        ]
        append = self._transcripts.append_args(
            sid, messages=ending.messages, run=ending.run, metadata=ending.metadata
        )
        replies = json.dumps(list(ending.replies), ensure_ascii=False)
        after = {
            "then": then,
            "sid": sid,
            "stem": self._stem(sid),
            "prefix": self.prefix,
            "lease": lease,
            # A list even when empty: cjson would read {} for an empty table.
            # Each event as its stream entry's field and value (``encode_feedback``).
            "feedback": [encode_feedback(sid, event) for event in ending.feedback],
            "max_feedback": self.max_feedback,
            "max_session_feedback": self.max_session_feedback,
            "max_pending": self.max_pending,
            "waking": WAKING,
            "known": KNOWN,
        }
        with self._guard():
            answer = await self._finish_run(
                keys=keys,
                args=[token, self._keep_ms, replies, json.dumps(after, ensure_ascii=False),
                      *append],
            )  # fmt: skip
        if isinstance(answer, (str, bytes)):
            newer = text(answer)
            raise StaleFencingToken(f"session {sid}: fencing token {token} is older than {newer}")
        stored, what = bool(answer[0]), text(answer[1])
        if what == "taken":
            return RunFinish(stored, take=_take(answer[2]))
        if what == "released":
            return RunFinish(stored, released=True, work_left=bool(answer[2]))
        if what == "lost":
            # Let go of by an earlier attempt of this very step (or expired): the session
            # goes to whichever worker takes it next.
            return RunFinish(stored, released=True, work_left=True)
        return RunFinish(stored)

    async def unsent_replies(self, session_id: str) -> dict[str, list[str]]:
        with self._guard():
            entries = await self._client.hgetall(self._outbox(session_id))
        return {text(run_id): json.loads(replies) for run_id, replies in entries.items()}

    async def replies_sent(self, session_id: str, run_id: str) -> None:
        with self._guard():
            await self._client.hdel(self._outbox(session_id), run_id)


__all__ = ["FINISH_RUN", "RedisRunEndings"]
