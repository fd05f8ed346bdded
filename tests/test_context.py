"""The context manager: budgets, compaction in steps, the stored summary, handoff, restore."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom import (
    Agent,
    ContextProtocol,
    ContinuityPolicy,
    FileSessionStore,
    InMemorySessionStore,
    Model,
    ModelRequest,
    ModelResponse,
    RunStatus,
    Runtime,
    SessionRestorePolicy,
    SessionStore,
    ToolCall,
    Usage,
    tool,
)
from loom.core.context import COMPACTION_STEPS
from loom.core.messages import Message
from loom.runtime.context import SUMMARY_INSTRUCTIONS
from loom.runtime.history import message_chars
from tests.services import delete_redis_keys, require_redis


def request_tokens(request: ModelRequest, per_char: float = 0.25) -> float:
    """An independent count of a request: instructions, messages and tool definitions."""
    tools = sum(len(t.name) + len(t.description) + len(str(t.parameters)) for t in request.tools)
    chars = len(request.instructions) + tools + sum(message_chars(m) for m in request.messages)
    return chars * per_char


class Scripted:
    """A Model.function: answers each run's user message; summarises on request."""

    def __init__(self, answer_chars: int = 300, fail_summaries: bool = False) -> None:
        self.requests: list[ModelRequest] = []
        self.summaries: list[ModelRequest] = []
        self.answer_chars = answer_chars
        self.fail_summaries = fail_summaries

    def __call__(self, request: ModelRequest) -> ModelResponse | str:
        if request.instructions == SUMMARY_INSTRUCTIONS:
            self.summaries.append(request)
            if self.fail_summaries:
                raise RuntimeError("summariser down")
            return f"SUMMARY#{len(self.summaries)}: the user asked numbered questions."
        self.requests.append(request)
        return "answer " + "a" * self.answer_chars


def manager(max_tokens: int = 2000, **options: Any) -> Any:
    return ContextProtocol.manager(max_tokens=max_tokens, **options)


async def test_a_200_turn_session_stays_within_max_tokens_with_one_summary_per_crossing() -> None:
    model = Scripted()
    compactions: list[dict[str, Any]] = []
    agent = Agent(Model.function(model), "You answer.", runtime=Runtime.sdk(context=manager()))
    agent.on("on_context_compact", lambda **payload: compactions.append(payload))
    session = agent.session("long")
    for turn in range(200):
        result = await session.run(f"question {turn}: " + "q" * 200)
        assert result.status is RunStatus.COMPLETED, result.error

    assert len(model.requests) == 200
    assert max(request_tokens(r) for r in model.requests) <= 2000
    # Each crossing of the trigger is one compaction with exactly one summary in it.
    assert compactions
    assert len(model.summaries) == len(compactions)
    assert all(c["steps"].count("summarize") == 1 for c in compactions)
    assert all(c["rho"] >= 0.85 and c["tokens_after"] <= 0.6 * 2000 for c in compactions)
    # After a summary the history has room again: the next crossing is turns later.
    runs_of = [c["run_id"] for c in compactions]
    assert len(set(runs_of)) == len(runs_of)
    # The summary is extended, not restarted: each request after the first folds the last.
    assert "SUMMARY#1" in model.summaries[1].messages[0].content
    assert session.stored_context.summary is not None
    assert f"SUMMARY#{len(model.summaries)}" in model.requests[-1].instructions


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return "value-" + key * 40


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(st.integers(0, 3), st.integers(10, 400)), min_size=5, max_size=30),
    drop_only=st.booleans(),
)
def test_tool_calls_and_results_are_never_split(
    plan: list[tuple[int, int]], drop_only: bool
) -> None:
    seen: list[ModelRequest] = []

    def model(request: ModelRequest) -> ModelResponse | str:
        if request.instructions == SUMMARY_INSTRUCTIONS:
            return "summary"
        seen.append(request)
        last = request.messages[-1]
        if last.role == "user":
            run = last.content.split(":")[0]
            calls, size = plan[int(run)]
            if calls:
                return ModelResponse.of_tool_calls(
                    *(
                        ToolCall(f"c{run}-{n}", "lookup", {"key": "k" * (size // 40 + 1)})
                        for n in range(calls)
                    )
                )
        run = next(m.content for m in reversed(request.messages) if m.role == "user")
        return "done " + "d" * plan[int(run.split(":")[0])][1]

    steps = ("drop_oldest_turns",) if drop_only else ("shorten_tool_results", "summarize")
    agent = Agent(
        Model.function(model),
        "x",
        tools=[lookup],
        runtime=Runtime.sdk(context=manager(1200, compaction=steps)),
    )

    async def go() -> None:
        session = agent.session("s")
        for index in range(len(plan)):
            result = await session.run(f"{index}: do it")
            assert result.status is RunStatus.COMPLETED, result.error

    asyncio.run(go())
    for request in seen:
        assert request.messages[0].role == "user"
        called = [c.id for m in request.messages for c in m.tool_calls]
        answered = [m.tool_call_id for m in request.messages if m.role == "tool"]
        assert called == answered


async def test_the_handoff_is_injected_into_the_next_request() -> None:
    model = Scripted()
    runtime = Runtime.sdk(context=manager(), continuity=ContinuityPolicy.handoff())
    agent = Agent(Model.function(model), "You answer.", runtime=runtime)
    session = agent.session("h")
    turn = 0
    while not model.summaries:
        await session.run(f"question {turn}: " + "q" * 200)
        turn += 1
    handoff = session.stored_context.handoff
    assert handoff is not None
    assert handoff.goal.startswith(f"question {turn - 1}")
    await session.run("next question")
    assert "Handoff from the compacted part of this session" in model.requests[-1].instructions
    assert f"Goal: question {turn - 1}" in model.requests[-1].instructions


async def test_a_failed_summary_falls_back_to_dropping_turns() -> None:
    model = Scripted(fail_summaries=True)
    compactions: list[dict[str, Any]] = []
    agent = Agent(Model.function(model), "x", runtime=Runtime.sdk(context=manager()))
    agent.on("on_context_compact", lambda **payload: compactions.append(payload))
    session = agent.session("f")
    for turn in range(30):
        assert (await session.run(f"question {turn}: " + "q" * 200)).ok
    assert compactions
    assert compactions[0]["summary_error"] == "RuntimeError: summariser down"
    assert compactions[0]["strategy"] == "drop_oldest_turns"
    assert compactions[0]["dropped_messages"] > 0
    assert session.stored_context.summary is None
    assert max(request_tokens(r) for r in model.requests) <= 2000


async def test_old_tool_results_are_shortened_first() -> None:
    def model(request: ModelRequest) -> ModelResponse | str:
        last = request.messages[-1]
        if request.instructions == SUMMARY_INSTRUCTIONS:
            raise AssertionError("shortening was enough: no summary should be asked for")
        if last.role == "user":
            return ModelResponse.of_tool_calls(
                ToolCall(f"c{len(request.messages)}", "lookup", {"key": "z" * 30})
            )
        return "ok"

    compactions: list[dict[str, Any]] = []
    context = manager(2000, keep_tool_result_chars=50)
    agent = Agent(Model.function(model), "x", tools=[lookup], runtime=Runtime.sdk(context=context))
    agent.on("on_context_compact", lambda **payload: compactions.append(payload))
    session = agent.session("t")
    for turn in range(8):
        assert (await session.run(f"q{turn}")).ok
    assert compactions[0]["steps"] == ["shorten_tool_results"]
    assert compactions[0]["shortened_results"] >= 1


async def test_calibration_uses_the_provider_reported_input_tokens() -> None:
    requests: list[ModelRequest] = []

    def model(request: ModelRequest) -> ModelResponse:
        if request.instructions == SUMMARY_INSTRUCTIONS:
            return ModelResponse(text="short summary")
        requests.append(request)
        # This provider's tokenizer counts twice what four-characters-a-token says.
        reported = int(request_tokens(request) * 2)
        return ModelResponse(text="a" * 100, usage=Usage(input_tokens=reported, output_tokens=1))

    store = InMemorySessionStore()
    agent = Agent(
        Model.function(model), "x", runtime=Runtime.sdk(context=manager()), session_store=store
    )
    session = agent.session("c")
    for turn in range(40):
        assert (await session.run(f"question {turn}: " + "q" * 150)).ok
    stored = await store.load_context("c")
    assert stored is not None
    assert stored.tokens_per_char == pytest.approx(0.5, rel=0.1)
    # Past the first answer, every request fits as the provider counts it.
    assert max(request_tokens(r, per_char=0.5) for r in requests[1:]) <= 2000


async def test_the_restore_window_is_applied_on_every_load() -> None:
    model = Scripted(answer_chars=10)
    store = InMemorySessionStore()
    runtime = Runtime.sdk(session_restore=SessionRestorePolicy.window(max_messages=4))
    for _ in range(2):  # a second agent: the way a restarted process or another worker loads
        agent = Agent(Model.function(model), "x", runtime=runtime, session_store=store)
        session = agent.session("w")
        for turn in range(4):
            assert (await session.run(f"turn {turn}")).ok
            # The earlier turns the run sees: at most four messages, whole turns.
            assert len(model.requests[-1].messages) - 1 <= 4
            assert model.requests[-1].messages[0].role == "user"
    snapshot = await store.load("w")
    assert snapshot is not None
    assert len(snapshot.messages) == 16


async def test_restore_none_starts_every_run_fresh() -> None:
    model = Scripted(answer_chars=10)
    runtime = Runtime.sdk(session_restore=SessionRestorePolicy.none())
    session = Agent(Model.function(model), "x", runtime=runtime).session("n")
    for turn in range(3):
        assert (await session.run(f"turn {turn}")).ok
        assert [m.content for m in model.requests[-1].messages] == [f"turn {turn}"]


async def test_sessions_never_see_each_others_context() -> None:
    model = Scripted()
    runtime = Runtime.long_running(continuity=ContinuityPolicy.handoff(), max_context_tokens=2000)
    agent = Agent(Model.function(model), "x", runtime=runtime)
    alice, bob = agent.session("alice"), agent.session("bob")
    for turn in range(25):
        await alice.run(f"alice secret {turn}: " + "q" * 200)
    assert alice.stored_context.summary is not None
    await bob.run("bob asks")
    assert "alice" not in model.requests[-1].instructions
    assert [m.content for m in model.requests[-1].messages] == ["bob asks"]


def test_budgets_that_do_not_add_up_are_refused_with_the_numbers() -> None:
    with pytest.raises(ValueError, match=r"budgets add up to 1500 tokens.*1200 tokens"):
        ContextProtocol.manager(
            max_tokens=2000, budgets={"C_working": 1000, "C_memory": 500, "C_skill": 0}
        )
    with pytest.raises(ValueError, match="C_history gets the rest"):
        ContextProtocol.manager(max_tokens=2000, budgets={"C_history": 10})
    with pytest.raises(ValueError, match="target < trigger"):
        ContextProtocol.manager(max_tokens=2000, trigger=0.5, target=0.6)
    with pytest.raises(ValueError, match=r"above the context window of the model \(1000 tokens\)"):
        ContextProtocol.manager(max_tokens=2000).with_window(1000)


async def _summarised_session(store: SessionStore, session_id: str) -> Scripted:
    model = Scripted()
    agent = Agent(
        Model.function(model), "x", runtime=Runtime.sdk(context=manager()), session_store=store
    )
    session = agent.session(session_id)
    turn = 0
    while not model.summaries:
        assert (await session.run(f"question {turn}: " + "q" * 200)).ok
        turn += 1
    return model


async def _reused_by_a_second_agent(store: SessionStore, session_id: str) -> None:
    stored = await store.load_context(session_id)
    assert stored is not None
    assert stored.summary is not None
    model = Scripted()
    agent = Agent(
        Model.function(model), "x", runtime=Runtime.sdk(context=manager()), session_store=store
    )
    assert (await agent.session(session_id).run("and now?")).ok
    request = model.requests[0]
    assert "SUMMARY#1" in request.instructions
    assert not model.summaries  # reused, not written again
    first = request.messages[0].content
    assert not any(f"question {n}:" in first for n in range(stored.summary.upto // 2))


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_the_summary_is_stored_and_reused(kind: str, tmp_path: Path) -> None:
    store: SessionStore = (
        InMemorySessionStore() if kind == "memory" else FileSessionStore(tmp_path / "s.jsonl")
    )
    await _summarised_session(store, "s")
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.messages[0].content.startswith("question 0:")
    if kind == "file":
        await store.close()
        store = FileSessionStore(tmp_path / "s.jsonl")  # read back from the log
    await _reused_by_a_second_agent(store, "s")


async def test_on_redis_the_summary_is_reused_and_written_under_the_fence() -> None:
    from loom.daemon.worker import FencedSessionStore
    from loom.state.leases import StaleFencingToken
    from loom.state.redis_state import RedisState

    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    first, second = RedisState(url, prefix=prefix), RedisState(url, prefix=prefix)
    try:
        await first.start()
        await second.start()
        lease = await first.acquire_lease("ops", "worker-1", 30)
        assert lease is not None
        await _summarised_session(FencedSessionStore(first.sessions, first, lease), "ops")
        await first.release_lease(lease)
        raw = await second.sessions.load("ops")
        assert raw is not None
        assert raw.messages[0].content.startswith("question 0:")
        appended = len(raw.messages)
        taken = await second.acquire_lease("ops", "worker-2", 30)
        assert taken is not None
        await _reused_by_a_second_agent(FencedSessionStore(second.sessions, second, taken), "ops")
        after = await second.sessions.load("ops")
        assert after is not None
        assert len(after.messages) == appended + 2
        assert after.messages[:appended] == raw.messages  # the transcript is never rewritten
        stale = FencedSessionStore(first.sessions, first, lease)
        context = await first.sessions.load_context("ops")
        assert context is not None
        with pytest.raises(StaleFencingToken):
            await stale.save_context("ops", context)
    finally:
        await first.close()
        await second.close()
        await delete_redis_keys(url, prefix)


def _messages(*contents: str) -> Sequence[Message]:
    return [Message.user(c) if n % 2 == 0 else Message.assistant(c) for n, c in enumerate(contents)]


def test_restore_window_takes_whole_turns_within_every_bound() -> None:
    messages = _messages("u1", "a1", "u2", "a2", "u3", "a3")
    policy = SessionRestorePolicy.window(max_transcripts=2, max_messages=24, max_chars=None)
    assert [m.content for m in policy.restore(messages).messages] == ["u2", "a2", "u3", "a3"]
    policy = SessionRestorePolicy.window(max_transcripts=8, max_messages=3, max_chars=None)
    assert [m.content for m in policy.restore(messages).messages] == ["u3", "a3"]
    assert SessionRestorePolicy.runtime_state().restore(messages).messages == []
    assert SessionRestorePolicy.transcript_only().restore(messages).runtime_items == 0


async def test_a_store_away_when_calibration_is_kept_does_not_fail_the_run() -> None:
    """The run is over and recorded when its calibration is kept: a store that fails then
    (Redis away) costs the next run its estimate, never this run its outcome."""
    from loom.state.base import StateUnavailable

    class Away(InMemorySessionStore):
        async def save_context(self, session_id: str, context: Any) -> None:
            raise StateUnavailable("Redis at redis://x is unavailable")

    def model(request: ModelRequest) -> ModelResponse:
        reported = int(request_tokens(request) * 2)
        return ModelResponse(text="answer", usage=Usage(input_tokens=reported, output_tokens=1))

    store = Away()
    agent = Agent(
        Model.function(model), "x", runtime=Runtime.sdk(context=manager()), session_store=store
    )
    result = await agent.session("c").run("question")

    assert result.ok, result.error
    snapshot = await store.load("c")
    assert snapshot is not None
    assert [r.status for r in snapshot.runs] == ["completed"]


def _long_run_model(steps: int, result_chars: int) -> tuple[list[ModelRequest], Any]:
    """A model that calls ``fetch`` ``steps`` times (two calls a turn), then answers."""
    seen: list[ModelRequest] = []

    def model(request: ModelRequest) -> ModelResponse | str:
        if request.instructions == SUMMARY_INSTRUCTIONS:
            return "summary"
        seen.append(request)
        turn = len(seen)
        if turn <= steps:
            return ModelResponse.of_tool_calls(
                ToolCall(f"a{turn}", "fetch", {"page": turn, "size": result_chars}),
                ToolCall(f"b{turn}", "fetch", {"page": -turn, "size": result_chars}),
            )
        return "all pages read"

    return seen, model


@tool(read_only=True)
def fetch(page: int, size: int) -> str:
    """A page of a long report."""
    return f"page {page}: " + "r" * size


@pytest.mark.parametrize(
    "steps", [COMPACTION_STEPS, ("drop_oldest_turns",), ("shorten_tool_results", "summarize")]
)
async def test_a_long_run_is_compacted_between_its_own_steps(steps: tuple[str, ...]) -> None:
    """A run whose own tool turns outgrow the budget: older results are shortened first,
    then its oldest steps are left out, calls never parted from their results; the stored
    transcript keeps everything."""
    seen, model = _long_run_model(steps=30, result_chars=1500)
    compactions: list[dict[str, Any]] = []
    runtime = Runtime.sdk(
        context=manager(4000, compaction=steps, keep_tool_result_chars=300), max_iterations=40
    )
    agent = Agent(Model.function(model), "You read reports.", tools=[fetch], runtime=runtime)
    agent.on("on_context_compact", lambda **payload: compactions.append(payload))
    session = agent.session("long")
    result = await session.run("read every page")
    assert result.status is RunStatus.COMPLETED, result.error
    assert len(seen) == 31
    assert compactions  # fired, between steps of the one run
    dropping = "drop_oldest_turns" in steps
    if dropping:  # without it only results shrink: 30 steps of calls still outgrow 4000
        assert all(request_tokens(r) <= 4000 for r in seen)
    if "shorten_tool_results" in steps:
        assert compactions[0]["steps"][0] == "shorten_tool_results"
        assert compactions[0]["shortened_results"] > 0
    assert any("drop_run_steps" in c["steps"] for c in compactions) is dropping
    for request in seen:
        assert request.messages[0].role == "user"
        assert request.messages[0].content.startswith("read every page")
        called = [c.id for m in request.messages for c in m.tool_calls]
        answered = [m.tool_call_id for m in request.messages if m.role == "tool"]
        assert called == answered
        roles = [m.role for m in request.messages]
        assert roles[1:2] in ([], ["assistant"])  # the run's first message, then the model
        # The newest step's results are whole: the model is about to read them.
        newest = [m for m in request.messages[-2:] if m.role == "tool"]
        assert all("shortened" not in m.content for m in newest)
    last = seen[-1]
    if "shorten_tool_results" in steps:
        older = [m for m in last.messages[:-2] if m.role == "tool"]
        assert older
        assert all("[shortened: " in m.content for m in older)
    if dropping:
        assert "earlier step(s) of this run" in last.messages[0].content
        assert len(last.messages) < 1 + 30 * 3
    # The transcript kept with the session is whole.
    stored = list(session.history)
    assert len(stored) == 1 + 30 * 3 + 1
    assert all(len(m.content) > 1500 for m in stored if m.role == "tool")
    assert not any("left out" in m.content for m in stored)


async def test_a_run_within_budget_is_not_touched() -> None:
    seen, model = _long_run_model(steps=3, result_chars=100)
    compactions: list[dict[str, Any]] = []
    agent = Agent(
        Model.function(model),
        "x",
        tools=[fetch],
        runtime=Runtime.sdk(context=manager(4000)),
    )
    agent.on("on_context_compact", lambda **payload: compactions.append(payload))
    await agent.run("read")
    assert compactions == []
    assert [len(r.messages) for r in seen] == [1, 4, 7, 10]
