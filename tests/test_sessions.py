"""Sessions: isolation, history across runs, ordering, persistence and compaction."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from loom import (
    Agent,
    FileSessionStore,
    InMemorySessionStore,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    RunStatus,
    Runtime,
    SessionConfig,
    ToolCall,
    tool,
)
from loom.runtime import session as session_module
from loom.state import RunRecord
from loom.state.redis_sessions import RedisSessionStore
from tests.services import delete_redis_keys, require_redis


class Recorder:
    """A model that answers ``echo: <last user text>`` and records requests per session."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []
        self.by_session: dict[str, list[ModelRequest]] = defaultdict(list)

    def __call__(self, request: ModelRequest) -> str:
        self.requests.append(request)
        self.by_session[request.session_id].append(request)
        return f"echo: {request.last_user_text()}"


def texts(messages: Sequence[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


async def test_sessions_never_see_each_others_history() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))
    alice = agent.session("alice")
    bob = agent.session("bob")

    await alice.run("my secret is 4242")
    await bob.run("hello")
    await alice.run("what is my secret?")
    await bob.run("and mine?")

    assert set(model.by_session) == {"alice", "bob"}
    for request in model.by_session["bob"]:
        assert all("4242" not in m.content for m in request.messages)
    assert texts(model.by_session["bob"][1].messages) == [
        ("user", "hello"),
        ("assistant", "echo: hello"),
        ("user", "and mine?"),
    ]
    assert texts(model.by_session["alice"][1].messages)[0] == ("user", "my secret is 4242")
    assert len(alice.history) == 4
    assert len(bob.history) == 4


async def test_history_is_kept_across_runs_of_one_session() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))
    session = agent.session("kept")

    await session.run("one")
    await session.run("two")

    assert texts(model.requests[1].messages) == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
    ]
    assert texts(session.history) == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
        ("assistant", "echo: two"),
    ]
    assert [r.output for r in session.runs] == ["echo: one", "echo: two"]


async def test_instructions_are_not_duplicated_across_runs() -> None:
    instructions = "You are the LOOM-INSTR-7 agent."
    model = Recorder()
    agent = Agent(Model.function(model), instructions)
    session = agent.session("repeat")

    for n in range(5):
        result = await session.run(f"run {n}")
        assert result.status is RunStatus.COMPLETED

    assert [r.instructions for r in model.requests] == [instructions] * 5
    for request in model.requests:
        assert all("LOOM-INSTR-7" not in m.content for m in request.messages)
    assert [len(r.messages) for r in model.requests] == [1, 3, 5, 7, 9]
    assert all("LOOM-INSTR-7" not in m.content for m in session.history)


async def test_anonymous_runs_never_share_context() -> None:
    model = Recorder()
    agent = Agent(Model.function(model))

    first = await agent.run("remember the word pineapple")
    second = await agent.run("which word?")

    assert len(model.requests[1].messages) == 1
    assert texts(model.requests[1].messages) == [("user", "which word?")]
    assert first.session_id != second.session_id
    assert first.session_id.startswith("anon_")
    assert second.session_id.startswith("anon_")


async def test_concurrent_starts_on_one_session_take_turns_in_order() -> None:
    log: list[str] = []

    async def model(request: ModelRequest) -> str:
        text = request.last_user_text()
        log.append(f"enter {text}")
        for _ in range(5):
            await asyncio.sleep(0)
        log.append(f"exit {text}")
        return f"done {text}"

    agent = Agent(Model.function(model))
    session = agent.session("serial")

    runs = [session.start(name) for name in ("a", "b", "c")]
    assert session.busy
    results = await asyncio.gather(*(run.wait() for run in runs))

    assert log == ["enter a", "exit a", "enter b", "exit b", "enter c", "exit c"]
    assert [r.output for r in results] == ["done a", "done b", "done c"]
    assert [m.content for m in session.history if m.role == "user"] == ["a", "b", "c"]
    assert not session.busy


async def test_different_sessions_run_concurrently() -> None:
    barrier = asyncio.Barrier(2)

    async def model(request: ModelRequest) -> str:
        await asyncio.wait_for(barrier.wait(), 2)  # only passes if both runs are in flight
        return "met"

    agent = Agent(Model.function(model))

    one, two = await asyncio.gather(agent.session("x").run("hi"), agent.session("y").run("hi"))

    assert (one.status, two.status) == (RunStatus.COMPLETED, RunStatus.COMPLETED)


def test_session_returns_the_same_object() -> None:
    agent = Agent(Model.test())

    first = agent.session("x")

    assert agent.session("x") is first
    assert agent.session(SessionConfig(id="x")) is first
    assert agent.session("y") is not first
    assert first.id == "x"


async def test_file_store_restores_history_in_a_new_agent(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    first_model = Recorder()
    agent = Agent(Model.function(first_model), session_store=FileSessionStore(path))
    session = agent.session("persisted")
    await session.run("first question")
    await session.run("second question")
    await agent.aclose()

    model = Recorder()
    restored = Agent(Model.function(model), session_store=FileSessionStore(path))
    result = await restored.session("persisted").run("third question")

    assert result.status is RunStatus.COMPLETED
    assert texts(model.requests[0].messages) == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second question"),
        ("assistant", "echo: second question"),
        ("user", "third question"),
    ]
    assert len(restored.session("persisted").history) == 6
    other = Recorder()
    fresh = Agent(Model.function(other), session_store=FileSessionStore(path))
    await fresh.session("someone-else").run("hi")
    assert len(other.requests[0].messages) == 1
    await restored.aclose()
    await fresh.aclose()


async def test_file_store_keeps_tool_turns_and_run_records(tmp_path: Path) -> None:
    @tool
    def lookup(key: str) -> str:
        return f"value of {key}"

    def model(request: ModelRequest) -> ModelResponse | str:
        if request.messages[-1].role == "user":
            return ModelResponse.of_tool_calls(ToolCall("k1", "lookup", {"key": "x"}))
        return "found it"

    path = tmp_path / "tools.jsonl"
    agent = Agent(Model.function(model), tools=[lookup], session_store=FileSessionStore(path))
    result = await agent.session("t").run("look x up")
    await agent.aclose()

    store = FileSessionStore(path)
    snapshot = await store.load("t")
    await store.close()

    assert snapshot is not None
    assert [m.role for m in snapshot.messages] == ["user", "assistant", "tool", "assistant"]
    assert snapshot.messages[1].tool_calls == (ToolCall("k1", "lookup", {"key": "x"}),)
    assert snapshot.messages[2].content == "value of x"
    assert [(r.run_id, r.status, r.output) for r in snapshot.runs] == [
        (result.run_id, "completed", "found it")
    ]


class BrokenStore(InMemorySessionStore):
    async def append(
        self,
        session_id: str,
        *,
        messages: Sequence[Message] = (),
        run: RunRecord | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        raise OSError("disk full")


class FlakyStore(InMemorySessionStore):
    """A store that is away for its first ``failures`` appends (a failover)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def append(self, session_id: str, **changes: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store briefly away")
        await super().append(session_id, **changes)


async def test_a_save_that_fails_for_a_moment_is_retried_not_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session_module, "SAVE_RETRY_PAUSES", (0.0, 0.0, 0.0))
    store = FlakyStore(failures=2)
    agent = Agent(Model.function(lambda request: "answer"), session_store=store)

    result = await agent.session("flaky").run("hi")

    assert result.status is RunStatus.COMPLETED
    assert result.output == "answer"
    snapshot = await store.load("flaky")
    assert snapshot is not None
    assert [(run.run_id, run.status) for run in snapshot.runs] == [(result.run_id, "completed")]


async def test_failed_save_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "SAVE_RETRY_PAUSES", (0.0, 0.0))
    agent = Agent(Model.function(lambda request: "answer"), session_store=BrokenStore())

    result = await agent.session("broken").run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "saving the session failed" in result.error
    assert "disk full" in result.error
    assert result.artifacts == ()
    assert result.output == "answer"


async def test_context_is_compacted_at_whole_turns() -> None:
    @tool
    def note(text: str) -> str:
        return "noted"

    def model(request: ModelRequest) -> ModelResponse | str:
        if request.messages[-1].role == "user":
            call_id = f"n{request.run_id[-6:]}"
            return ModelResponse.of_tool_calls(ToolCall(call_id, "note", {"text": "x"}))
        return "ok " + "r" * 80

    compactions: list[dict[str, Any]] = []
    agent = Agent(
        Model.function(model),
        "short instructions",
        tools=[note],
        runtime=Runtime.sdk(max_context_tokens=256),
    )
    agent.on("on_context_compact", lambda **payload: compactions.append(payload))
    session = agent.session("long")

    results = [await session.run(f"message {n}: " + "p" * 250) for n in range(6)]

    assert all(r.status is RunStatus.COMPLETED for r in results)
    assert compactions, "the history never got compacted"
    first = compactions[0]
    assert first["strategy"] == "drop_oldest_turns"
    assert first["rho"] >= 0.9
    assert first["rho_after"] < first["rho"]
    assert first["dropped_messages"] > 0
    assert {"run_id", "iteration"} <= set(first)
    history = session.history
    assert history[0].role == "user"
    assert history[0].content.startswith("message ")
    assert not history[0].content.startswith("message 0")
    assert history[-1].content.startswith("ok ")
    call_ids = [c.id for m in history for c in m.tool_calls]
    assert call_ids == [m.tool_call_id for m in history if m.role == "tool"]
    compacted = [e for r in results for e in r.events if e.type == "context.compacted"]
    assert len(compacted) == len(compactions)


@pytest.fixture(params=["memory", "file", "redis"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        yield InMemorySessionStore()
    elif request.param == "file":
        yield FileSessionStore(tmp_path / "sessions.jsonl")
    else:
        redis_url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
        store = RedisSessionStore(redis_url, prefix=prefix)
        yield store
        await store.close()
        await delete_redis_keys(redis_url, prefix)


async def test_half_a_character_from_the_model_or_a_tool_is_stored_as_a_replacement(
    any_store: Any,
) -> None:
    """A lone surrogate (an emoji cut at the token limit, escaped in the provider's JSON)
    has no UTF-8 form: before, the Redis and file stores could not save the run, which
    failed, and a daemon retried it until its poison limit."""
    half = "\ud83d"

    @tool
    def echo(text: str) -> str:
        return f"tool says {text}{half}"

    def model(request: ModelRequest) -> ModelResponse:
        if request.messages[-1].role == "user":
            call = ToolCall("c1", "echo", {"text": f"arg{half}"}, raw_arguments=None)
            return ModelResponse.of_tool_calls(call, text=f"calling{half}")
        return ModelResponse(text=f"done {half}, whole 😀 and joined \ud83d\ude00")

    agent = Agent(Model.function(model), tools=[echo], session_store=any_store)
    result = await agent.session("half").run("go")
    await agent.aclose()

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == "done \ufffd, whole 😀 and joined 😀"
    snapshot = await any_store.load("half")
    assert snapshot is not None
    assert [m.content for m in snapshot.messages] == [
        "go",
        "calling\ufffd",
        "tool says arg\ufffd\ufffd",
        "done \ufffd, whole 😀 and joined 😀",
    ]
    assert snapshot.messages[1].tool_calls[0].arguments == {"text": "arg\ufffd"}
    assert [(r.status, r.output) for r in snapshot.runs] == [("completed", result.output)]
