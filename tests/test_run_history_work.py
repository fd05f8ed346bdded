"""A run's work on its session's history: each loaded message is parsed and measured once.

A worker starts every run from a fresh ``Session`` (another worker may have run the session
since), so whatever a run does per history message it does on every run, for up to
``max_messages`` messages: doing it twice (the loaded history measured again for the run's
context window), or parsing each stored entry on its own, made CPU per run grow with the
transcript twice as fast as it has to.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pytest

from loom import Agent, Model
from loom.core.messages import Message, ToolCall
from loom.runtime import history
from loom.runtime.config import SessionConfig
from loom.runtime.session import Session
from loom.state.memory_sessions import InMemorySessionStore
from loom.state.redis_history import parse_entries


async def test_a_run_measures_each_loaded_message_once(monkeypatch: pytest.MonkeyPatch) -> None:
    store = InMemorySessionStore()
    agent = Agent(Model.test(), "You are terse.", session_store=store)
    for turn in range(30):
        fresh = Session(agent, SessionConfig(id="s"), store=store)
        assert (await fresh.run(f"signal {turn}")).ok
    loaded = await store.load_history("s")
    assert loaded is not None
    assert len(loaded.messages) == 60
    measured: list[Message] = []
    one, many = history.message_chars, history.messages_chars

    def counting(message: Message) -> int:
        measured.append(message)
        return one(message)

    def counting_all(messages: Sequence[Message]) -> int:
        measured.extend(messages)
        return many(messages)

    monkeypatch.setattr(history, "message_chars", counting)
    monkeypatch.setattr(history, "messages_chars", counting_all)
    session = Session(agent, SessionConfig(id="s"), store=store)
    assert (await session.run("one more")).ok
    # The 60 loaded messages once each, then the run's own two as they join the history.
    assert len(measured) == 62


def test_messages_measure_together_as_each_alone() -> None:
    call = ToolCall("c1", "look", {"path": "/tmp", "deep": [1, {"x": None}]})
    other = ToolCall("c2", "list", {})
    messages = [
        Message.user("question"),
        Message.assistant("", (call, other)),
        Message.tool_result(call, "found it"),
        Message.assistant("done"),
    ]
    assert history.messages_chars(messages) == sum(map(history.message_chars, messages))
    assert history.message_chars(messages[1]) > history.message_chars(Message.assistant(""))
    grown = history.WorkingHistory(messages[:1])
    grown.extend(message for message in messages[1:])  # any iterable, measured once
    assert grown.messages == messages
    assert grown.chars == history.WorkingHistory(messages).chars == history.messages_chars(messages)


def entries(messages: list[Message]) -> list[str]:
    return [json.dumps(message.to_dict()) for message in messages]


def test_entries_parse_as_each_alone_would() -> None:
    call = ToolCall("c1", "look", {"path": "/tmp", "deep": [1, {"x": None}]}, raw_arguments="{}")
    messages = [
        Message.user('question, with "quotes", commas] and brackets{'),
        Message.assistant("", (call,)),
        Message.tool_result(call, "failed", is_error=True),
        Message(role="assistant", content="done", provider_data={"thinking": ["signed"]}),
        Message.user(""),
    ]
    raw = entries(messages)
    assert parse_entries(raw) == [Message.from_dict(json.loads(item)) for item in raw]
    parsed = parse_entries(raw)
    assert parsed == messages
    plain = [i for i, m in enumerate(messages) if not m.tool_calls and not m.provider_data]
    assert [hash(parsed[i]) for i in plain] == [hash(messages[i]) for i in plain]
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed[0].content = "changed"  # type: ignore[misc]
    assert parse_entries([]) == []


def test_entries_that_are_not_one_message_each_are_refused() -> None:
    raw = entries([Message.user("a")])
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        parse_entries([raw[0] + "," + raw[0]])  # two values in one entry
    with pytest.raises(ValueError, match="unknown message role"):
        parse_entries(['{"role": "system", "content": "x"}'])
    # Halves that would join into values in one parse are refused as the entries they are.
    with pytest.raises(json.JSONDecodeError):
        parse_entries(['{"role": "user", "content": "a', 'b"}'])
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        parse_entries(["1,2", '"x', 'y"'])  # three values in one parse, as three entries
