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
message) and by time since their last use. Which sessions are held when they do not all
fit is ``HeldHistories``' choice: not simply the most recently used, which holds nothing
useful when sessions come round in turn.
"""

from __future__ import annotations

import heapq
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
AGE_LOADS = 10
"""Loads per session counted between two halvings of the load counts."""
USES_KEPT = 65_536
"""Sessions whose loads are counted at most (about 100 bytes each)."""

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
        weights = [len(item) + MESSAGE_OVERHEAD for item in raw]  # ``weight``, inlined
        return self.with_messages(appended, parse_entries(raw), weights, keep)

    def with_messages(
        self, appended: int, added: Sequence[Message], weights: Sequence[int], keep: int
    ) -> HeldHistory:
        """This mirror with ``added`` (already parsed) after it, the newest ``keep`` kept."""
        messages = (*self.messages, *added)
        sizes = (*self.weights, *weights)
        size = self.size + sum(weights)
        start = max(len(messages) - keep, 0)
        if start:
            size -= sum(sizes[:start])
            messages, sizes = messages[start:], sizes[start:]
        return HeldHistory(self.created_at, appended, messages, sizes, size, time.monotonic())


class HeldHistories:
    """Parsed transcripts by session id, within ``max_bytes``: least recently used dropped
    first, but a session is let in past a full budget only if it was loaded more often
    than every session it would drop.

    Plain LRU holds nothing useful when a worker's sessions come round in turn and do not
    all fit: the one it drops is always the next to run, so every load misses. Counting
    loads (``uses``, halved now and then so the counts follow a changing load) keeps a
    stable set held instead: a newcomer that was loaded no more often than one of the
    held sessions it would drop is not let in (ties keep what is held), so with sessions in
    turn as many hit as fit, and a session that runs more often than others takes a place.
    Entries unused for ``hold_seconds`` still go, which makes room again.
    """

    def __init__(
        self, max_bytes: int = DEFAULT_HOLD_BYTES, hold_seconds: float = DEFAULT_HOLD_SECONDS
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"hold_bytes must be 0 or more, not {max_bytes}")
        self.max_bytes = max_bytes
        self.hold_seconds = hold_seconds
        self.size = 0
        """Bytes held, as the mirrors' ``size`` counts them."""
        self.hits = 0
        """Loads (``get``) that found the session held."""
        self.misses = 0
        """Loads that did not."""
        self.refused = 0
        """Mirrors not let in: the budget was full of sessions loaded at least as often."""
        self._held: OrderedDict[str, HeldHistory] = OrderedDict()
        self._uses: dict[str, int] = {}
        self._loads = 0  # since the counts were last halved

    def __len__(self) -> int:
        return len(self._held)

    def get(self, session_id: str) -> HeldHistory | None:
        """The session's mirror for a load, if held; counts the load either way."""
        held = self.peek(session_id)
        self._count(session_id)
        if held is None:
            self.misses += 1
        else:
            self.hits += 1
        return held

    def peek(self, session_id: str) -> HeldHistory | None:
        """The session's mirror, if held, without counting a load (an append's look)."""
        self._expire()
        return self._held.get(session_id)

    def put(self, session_id: str, history: HeldHistory) -> None:
        """Hold ``history`` as the session's mirror: in place of the one held, or, for a
        session not held, if it fits or was loaded more often than the one it drops."""
        held = session_id in self._held
        self.drop(session_id)
        if history.size > self.max_bytes:
            return
        if not held and self.size + history.size > self.max_bytes:
            # This load was counted by ``get``: compare the loads before it with those of
            # every session it would drop (least recently used first), not just the first:
            # a large newcomer may need the room of several.
            before = self._uses.get(session_id, 1) - 1
            victims, room = [], self.max_bytes - self.size
            for victim, mirror in self._held.items():
                if room >= history.size:
                    break
                if before <= self._uses.get(victim, 0):
                    self.refused += 1
                    return
                victims.append(victim)
                room += mirror.size
            for victim in victims:
                self.drop(victim)
        self._held[session_id] = history
        self.size += history.size
        while self.size > self.max_bytes:
            _, dropped = self._held.popitem(last=False)
            self.size -= dropped.size

    def drop(self, session_id: str) -> None:
        old = self._held.pop(session_id, None)
        if old is not None:
            self.size -= old.size

    def _count(self, session_id: str) -> None:
        self._uses[session_id] = self._uses.get(session_id, 0) + 1
        self._loads += 1
        # Halved every ten loads per session counted, so the counts follow the load; and
        # when more sessions are counted than ``USES_KEPT`` (those loaded once drop out).
        if self._loads >= AGE_LOADS * max(len(self._uses), 64) or len(self._uses) > USES_KEPT:
            self._uses = {sid: uses // 2 for sid, uses in self._uses.items() if uses > 1}
            self._loads = 0
            excess = len(self._uses) - USES_KEPT * 7 // 8
            if excess > 0:
                # Still too many (the counts were alike): the least loaded sessions not
                # held are forgotten, not every count halved away, which would make the
                # held ones lose to any newcomer. Down to 7/8, so this is not redone at
                # every new session.
                spare = (sid for sid in self._uses if sid not in self._held)
                for sid in heapq.nsmallest(excess, spare, key=self._uses.__getitem__):
                    del self._uses[sid]

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
