"""A session's working history with a running size estimate, so each request is cheap."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from operator import attrgetter

from loom.core.messages import Message

MESSAGE_OVERHEAD_CHARS = 16
"""Roles, ids and separators cost tokens too; about four tokens a message."""


def message_chars(message: Message) -> int:
    """Characters a message contributes to a request, for the four-chars-a-token estimate."""
    return len(message.content) + MESSAGE_OVERHEAD_CHARS + _calls_chars(message)


def messages_chars(messages: Sequence[Message]) -> int:
    """``message_chars`` summed over ``messages``: the contents' lengths are added up in C
    (a run whose session was not held measures its whole history with this)."""
    chars = sum(map(len, map(_CONTENT, messages))) + MESSAGE_OVERHEAD_CHARS * len(messages)
    for message in filter(_CALLS, messages):
        chars += _calls_chars(message)
    return chars


def _calls_chars(message: Message) -> int:
    return sum(
        len(call.name) + len(json.dumps(call.arguments, default=str)) for call in message.tool_calls
    )


_CONTENT = attrgetter("content")
_CALLS = attrgetter("tool_calls")


class WorkingHistory:
    """What earlier runs of a session left for the model to see.

    Compaction drops whole turns (a user message and everything up to the next one) from
    the front, so no tool result is ever separated from the call it answers.
    """

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self.messages: list[Message] = []
        self.chars = 0
        self.extend(messages)

    def __len__(self) -> int:
        return len(self.messages)

    def copy(self) -> WorkingHistory:
        """A copy with a list of its own and the size already known (no message measured
        again: a run's window starts from the whole history)."""
        twin = WorkingHistory()
        twin.messages = list(self.messages)
        twin.chars = self.chars
        return twin

    def extend(self, messages: Iterable[Message]) -> None:
        added = messages if isinstance(messages, list | tuple) else list(messages)
        self.messages.extend(added)
        self.chars += messages_chars(added)

    def drop_oldest_turns(self, target_chars: int) -> int:
        """Drop leading turns until at most ``target_chars`` remain; returns messages dropped."""
        cut = 0
        chars = self.chars
        messages = self.messages
        while cut < len(messages) and chars > target_chars:
            chars -= message_chars(messages[cut])
            cut += 1
            while cut < len(messages) and messages[cut].role != "user":
                chars -= message_chars(messages[cut])
                cut += 1
        if cut:
            del messages[:cut]
            self.chars = chars
        return cut

    def snapshot(self) -> Sequence[Message]:
        return tuple(self.messages)
