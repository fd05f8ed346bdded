"""Transcripts a Redis session store holds parsed, so a run reads only what was appended since.

Reloading and parsing a whole transcript for every run cost 13.8 ms at 2,000 messages. A store
instance keeps, per session it loaded recently, the parsed mirror of the session's message
list and the version it mirrors: the session's ``created_at`` (a deleted or expired session
that comes back is another session) and its ``appended`` counter. One script reads the
session's info and metadata and either the entries appended since that version or, when the
mirror no longer fits (another creation, or more appended than the list keeps), the whole
list. Every writer of the message list must bump ``appended`` by the entries it pushes, as
the append script does.

The mirrors are bounded: by bytes (the JSON they were parsed from, plus a fixed cost per
message) and by time since their last use.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from loom.core.messages import Message

DEFAULT_HOLD_BYTES = 32 * 1024 * 1024
DEFAULT_HOLD_SECONDS = 300.0
MESSAGE_OVERHEAD = 400
"""About what a parsed message costs beyond its JSON (object, dicts, list slot)."""

# KEYS: info, messages, meta, context. Returns {} for a missing session, else {info, meta,
# mode, items, length, context}: mode 'since' means items are the entries appended after
# ARGV[2] (the mirror is still good), 'all' that they are the whole list. ``length`` is the
# list's length, to trim the mirror to it; ``context`` the stored summary and handoff ('').
LOAD_SINCE = """
local info = redis.call('HGETALL', KEYS[1])
if #info == 0 then return {} end
local created, appended = '', 0
for i = 1, #info, 2 do
  if info[i] == 'created_at' then created = info[i + 1]
  elseif info[i] == 'appended' then appended = tonumber(info[i + 1]) end
end
local length = redis.call('LLEN', KEYS[2])
local new = appended - tonumber(ARGV[2])
local mode, items = 'all', nil
if created == ARGV[1] and new >= 0 and new <= length then
  mode = 'since'
  if new == 0 then items = {} else items = redis.call('LRANGE', KEYS[2], -new, -1) end
else
  items = redis.call('LRANGE', KEYS[2], 0, -1)
end
return {info, redis.call('HGETALL', KEYS[3]), mode, items, length,
        redis.call('GET', KEYS[4]) or ''}
"""


@dataclass(frozen=True, slots=True)
class HeldHistory:
    """The parsed mirror of one session's message list at one version (never changed:
    a newer version is a new object, so concurrent loads cannot mix)."""

    created_at: str
    appended: int
    messages: tuple[Message, ...]
    weights: tuple[int, ...]
    """Each message's JSON length plus ``MESSAGE_OVERHEAD``."""
    size: int
    used: float

    @classmethod
    def parsed(cls, created_at: str, appended: int, raw: Sequence[str]) -> HeldHistory:
        """A mirror of the whole list ``raw``."""
        return cls(created_at, appended, (), (), 0, 0.0).extended(appended, raw, len(raw))

    def extended(self, appended: int, raw: Sequence[str], keep: int) -> HeldHistory:
        """This mirror with the entries ``raw`` parsed after it, the newest ``keep`` kept."""
        weights = [weight(item) for item in raw]
        return self.with_messages(appended, parse_entries(raw), weights, keep)

    def with_messages(
        self, appended: int, added: Sequence[Message], weights: Sequence[int], keep: int
    ) -> HeldHistory:
        """This mirror with ``added`` (already parsed) after it, the newest ``keep`` kept."""
        messages = (*self.messages, *added)
        sizes = (*self.weights, *weights)
        start = max(len(messages) - keep, 0)
        if start:
            messages, sizes = messages[start:], sizes[start:]
        return HeldHistory(self.created_at, appended, messages, sizes, sum(sizes), time.monotonic())


class HeldHistories:
    """Parsed transcripts by session id, least recently used dropped first."""

    def __init__(
        self, max_bytes: int = DEFAULT_HOLD_BYTES, hold_seconds: float = DEFAULT_HOLD_SECONDS
    ) -> None:
        self.max_bytes = max_bytes
        self.hold_seconds = hold_seconds
        self.size = 0
        """Bytes held, as the mirrors' ``size`` counts them."""
        self._held: OrderedDict[str, HeldHistory] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def get(self, session_id: str) -> HeldHistory | None:
        self._expire()
        return self._held.get(session_id)

    def put(self, session_id: str, history: HeldHistory) -> None:
        self.drop(session_id)
        if history.size > self.max_bytes:
            return
        self._held[session_id] = history
        self.size += history.size
        while self.size > self.max_bytes:
            _, dropped = self._held.popitem(last=False)
            self.size -= dropped.size

    def drop(self, session_id: str) -> None:
        old = self._held.pop(session_id, None)
        if old is not None:
            self.size -= old.size

    def _expire(self) -> None:
        deadline = time.monotonic() - self.hold_seconds
        while self._held:
            session_id, oldest = next(iter(self._held.items()))
            if oldest.used > deadline:
                return
            self.drop(session_id)


def weight(raw: str) -> int:
    return len(raw) + MESSAGE_OVERHEAD


def parse_entries(raw: Sequence[str]) -> list[Message]:
    """Message-list entries (each one JSON object) parsed with one JSON parse for them all.

    A store that does not hold a session (it holds fewer than its worker runs in turn, say)
    parses the whole list for every run, up to ``max_messages`` entries: one parse instead
    of one per entry takes about half the time that costs.
    """
    if not raw:
        return []
    try:
        entries = json.loads("[" + ",".join(raw) + "]")
        if len(entries) == len(raw):
            return [Message.from_dict(data) for data in entries]
    except (ValueError, TypeError, KeyError):
        pass
    # Something is not one JSON message per entry: parsed one by one, the error names the
    # entry and its own position (or the entries were whole after all).
    return [Message.from_dict(json.loads(entry)) for entry in raw]
