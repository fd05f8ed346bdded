"""``RunEndings`` on Redis: a run's ending in one fenced script keyed by its run id.

Keys (layout of every key: ``loom.state.redis_state``)::

    {prefix}:s:{<sid>}:outbox          HASH    run id -> the run's replies, a JSON array

The script checks the run id first (stored already: a retry whose first attempt landed),
then the fencing token, and only then writes: the transcript and the run record (the
session store's own append), the outbox entry, and the release of the in-flight signals.
"""

from __future__ import annotations

import json

from loom.state.endings import RunEnding, RunEndings
from loom.state.leases import StaleFencingToken
from loom.state.redis_sessions import APPEND_FUNCTION, RedisSessionStore, session_key, text
from loom.state.redis_working import RedisWorkingState

# KEYS: the append's six (info, messages, runs, order, meta, index), then fence, token,
# inflight, outbox, the activity index. ARGV: token, keep (ms, 0 = no expiry), the
# replies as one JSON array, then the append's arguments. Answers 1 (stored), 0 (stored
# before) or the newer token.
FINISH_RUN = (
    APPEND_FUNCTION
    + """
local A = {}
for i = 4, #ARGV do A[i - 3] = ARGV[i] end
if redis.call('HEXISTS', KEYS[3], A[7]) == 1 then return 0 end
local token, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
local fence = tonumber(redis.call('GET', KEYS[7]) or '0')
local issued = tonumber(redis.call('GET', KEYS[8]) or '0')
local newest = math.max(fence, issued)
if token < newest then return string.format('%d', newest) end
if keep > 0 then
  redis.call('SET', KEYS[7], ARGV[1], 'PX', keep)
else
  redis.call('SET', KEYS[7], ARGV[1])
end
append({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, A)
redis.call('DEL', KEYS[9])
if ARGV[3] ~= '[]' then
  redis.call('HSET', KEYS[10], A[7], ARGV[3])
  if keep > 0 then redis.call('PEXPIRE', KEYS[10], keep) end
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[11], t[1] .. '.' .. string.format('%06d', tonumber(t[2])), A[1])
return 1
"""
)


class RedisRunEndings(RedisWorkingState, RunEndings):
    """``RunEndings`` on the working state's Redis client; ``RedisState`` calls
    ``_register_ending_scripts`` once it has its client and session store."""

    def _register_ending_scripts(self, transcripts: RedisSessionStore) -> None:
        self._transcripts = transcripts
        self._finish_run = self._client.register_script(FINISH_RUN)

    def _outbox(self, session_id: str) -> str:
        return session_key(self.prefix, session_id, "outbox")

    async def finish_run(self, token: int, ending: RunEnding) -> bool:
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
        with self._guard():
            answer = await self._finish_run(
                keys=keys, args=[token, self._keep_ms, replies, *append]
            )
        if isinstance(answer, (str, bytes)):
            newer = text(answer)
            raise StaleFencingToken(f"session {sid}: fencing token {token} is older than {newer}")
        return bool(answer)

    async def unsent_replies(self, session_id: str) -> dict[str, list[str]]:
        with self._guard():
            entries = await self._client.hgetall(self._outbox(session_id))
        return {text(run_id): json.loads(replies) for run_id, replies in entries.items()}

    async def replies_sent(self, session_id: str, run_id: str) -> None:
        with self._guard():
            await self._client.hdel(self._outbox(session_id), run_id)


__all__ = ["FINISH_RUN", "RedisRunEndings"]
