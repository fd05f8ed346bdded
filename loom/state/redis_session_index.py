"""``SessionIndex`` on Redis: the activity index that the decision and run-ending scripts
keep (``RECORD_SIGNALS``, ``FINISH_RUN``), read a page at a time.

Keys (layout of every key: ``loom.state.redis_state``)::

    {prefix}:activity                  ZSET    session id -> last active (server seconds)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from loom.state.redis_ids import run_id_of
from loom.state.redis_records import decode_run
from loom.state.redis_sessions import INLINE_OUTPUT, session_key, text
from loom.state.redis_working import RedisWorkingState
from loom.state.session_index import SessionIndex, SessionSummary

# The rows of a page in one step. KEYS[1]: the activity index; ARGV: the key stem of the
# first session and its id, then the others'. Per session: its score, newest decision and
# newest run record (with its output, when the transcript holds it) and its field ('' = none).
SUMMARIES = (
    INLINE_OUTPUT
    + """
local out = {}
for i = 1, #ARGV, 2 do
  local stem, sid = ARGV[i], ARGV[i + 1]
  local newest = redis.call('ZREVRANGE', stem .. 'run_order', 0, 0)
  local run = newest[1] and redis.call('HGET', stem .. 'runs', newest[1]) or ''
  if run ~= '' then run = with_output(run, stem .. 'info', stem .. 'messages') end
  out[#out + 1] = redis.call('ZSCORE', KEYS[1], sid) or ''
  out[#out + 1] = redis.call('LINDEX', stem .. 'decisions', -1) or ''
  out[#out + 1] = run
  out[#out + 1] = newest[1] or ''
end
return out
"""
)


class RedisSessionIndex(RedisWorkingState, SessionIndex):
    """``SessionIndex`` on the working state's client (the scripts that record decisions
    keep the index); ``RedisState`` calls ``_register_index_scripts``."""

    def _register_index_scripts(self) -> None:
        self._summaries = self._client.register_script(SUMMARIES)

    @property
    def _activity(self) -> str:
        return f"{self.prefix}:activity"

    async def recent_sessions(self, offset: int, limit: int) -> list[tuple[str, float]]:
        if limit <= 0 or offset < 0:
            return []
        with self._guard():
            rows: list[Any] = await self._client.zrevrange(
                self._activity, offset, offset + limit - 1, withscores=True
            )
        return [(text(sid), float(score)) for sid, score in rows]

    async def count_sessions(self) -> int:
        with self._guard():
            return int(await self._client.zcard(self._activity))

    async def activity_ranks(self, session_ids: Sequence[str]) -> dict[str, int]:
        if not session_ids:
            return {}
        with self._guard():
            async with self._client.pipeline(transaction=False) as pipe:
                for sid in session_ids:
                    pipe.zrevrank(self._activity, sid)
                ranks = await pipe.execute()
        return {sid: int(r) for sid, r in zip(session_ids, ranks, strict=True) if r is not None}

    async def session_summaries(self, session_ids: Sequence[str]) -> list[SessionSummary]:
        if not session_ids:
            return []
        args = [part for sid in session_ids for part in (session_key(self.prefix, sid, ""), sid)]
        with self._guard():
            flat = [text(v) for v in await self._summaries(keys=[self._activity], args=args)]
        rows = [flat[i : i + 4] for i in range(0, len(flat), 4)]
        return [
            SessionSummary(
                sid,
                float(score) if score else None,
                decision or None,
                # The record as the memory state gives it: whole, not as it is stored.
                json.dumps(decode_run(run_id_of(field), sid, run).to_dict()) if run else None,
            )
            for sid, (score, decision, run, field) in zip(session_ids, rows, strict=True)
        ]


__all__ = ["SUMMARIES", "RedisSessionIndex"]
