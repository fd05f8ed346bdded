"""Request bodies whose cost does not grow with the history already sent.

The official SDKs walk every request argument in Python before sending it (``openai``
transforms it against its types, ``anthropic`` deep-copies it), which costs tens of
milliseconds per call at a thousand messages and blocks the event loop meanwhile. Loom
already builds the provider's wire JSON itself, so it serialises each message once,
keeps the bytes, and sends the body through the client's raw request path
(``client.post(..., content=...)``), which keeps the client's auth, errors and stream types.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, Generic, TypeVar

from loom.core.messages import Message

Fragments = tuple[bytes, ...]
DEFAULT_CACHE_BYTES = 16 * 1024 * 1024
ENTRY_OVERHEAD = 200
"""About what an entry costs besides its bytes (the key, the tuple, the dict slot)."""


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
FILL_SLICE = 0.0005
"""Seconds of serialising after which ``WireCache.values`` lets the event loop run."""


def dumps(value: Any) -> bytes:
    """JSON as the SDKs send it (their ``openapi_dumps`` defaults)."""
    return _ENCODER.encode(value).encode()


V = TypeVar("V")


class WireCache(Generic[V]):
    """Each message's wire JSON, built once by ``build``; least recently used out first.

    Keyed by the message object (messages are immutable); an entry holds its message so the
    id cannot be reused while the entry lives. Bounded by the bytes ``weight`` counts.
    """

    def __init__(
        self,
        build: Callable[[Message], V],
        weight: Callable[[V], int],
        max_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.build = build
        self.weight = weight
        self.max_bytes = max_bytes
        self.size = 0
        """The bytes the entries hold, as ``weight`` counts them."""
        self._entries: OrderedDict[int, tuple[Message, V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def values(
        self, messages: Sequence[Message], slice_seconds: float = FILL_SLICE
    ) -> list[V]:
        """``self(message)`` for each message, in one pass (it runs for every call). Building
        the ones not held lets the event loop run after each ``slice_seconds`` of work: a long
        history met for the first time (a session this process just took over) does not
        stall the other sessions on the loop."""
        entries, refresh = self._entries, self._entries.move_to_end
        found: list[V] = []
        began = 0.0
        for message in messages:
            key = id(message)
            entry = entries.get(key)
            if entry is not None and entry[0] is message:
                refresh(key)
                found.append(entry[1])
                continue
            if not began:
                began = time.perf_counter()
            found.append(self(message))
            if time.perf_counter() - began > slice_seconds:
                await asyncio.sleep(0)
                began = time.perf_counter()
        return found

    def __call__(self, message: Message) -> V:
        key = id(message)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is message:
            self._entries.move_to_end(key)
            return entry[1]
        value = self.build(message)
        size = self.weight(value)
        if entry is not None:  # the id of a message freed since: the entry is stale
            self.size -= entry[2]
        self._entries[key] = (message, value, size)
        self._entries.move_to_end(key)
        self.size += size
        while self.size > self.max_bytes:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.size -= dropped
        return value


def fragments_cache(build: Callable[[Message], Fragments]) -> WireCache[Fragments]:
    """A cache of messages that each become a run of wire items."""
    return WireCache(build, lambda fragments: sum(map(len, fragments)) + ENTRY_OVERHEAD)


def json_array(items: Iterable[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def spliced_body(params: Mapping[str, Any], key: str, array: bytes) -> bytes:
    """``params`` as JSON with ``key`` set to the already serialised ``array``.

    ``extra_body`` entries (the generation's extensions) are merged at the top level as the
    SDKs merge them, and win; one that replaces ``key`` itself replaces the array too.
    """
    fields = dict(params)
    extra = fields.pop("extra_body", None) or {}
    if key in extra:
        return dumps({**fields, **extra})
    fields.update(extra)
    fields.pop(key, None)
    rest = dumps(fields)
    head = b'{"' + key.encode() + b'":' + array
    return head + b"}" if rest == b"{}" else head + b"," + rest[1:]


def array_of(values: Iterable[Fragments], before: Sequence[bytes] = ()) -> bytes:
    """The JSON array of the items of every message (their ``values``), after ``before``."""
    return json_array(chain(before, chain.from_iterable(values)))
