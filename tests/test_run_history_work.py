"""A run's work on its session's history: each loaded message is parsed and measured once.

A worker starts every run from a fresh ``Session`` (another worker may have run the session
since), so whatever a run does per history message it does on every run, for up to
``max_messages`` messages: doing it twice (the loaded history measured again for the run's
context window), or parsing each stored entry on its own, made CPU per run grow with the
transcript twice as fast as it has to.
"""

from __future__ import annotations

import json

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
    original = history.message_chars

    def counting(message: Message) -> int:
        measured.append(message)
        return original(message)

    monkeypatch.setattr(history, "message_chars", counting)
    session = Session(agent, SessionConfig(id="s"), store=store)
    assert (await session.run("one more")).ok
    # The 60 loaded messages once each, then the run's own two as they join the history.
    assert len(measured) == 62


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
    assert parse_entries(raw) == messages
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
