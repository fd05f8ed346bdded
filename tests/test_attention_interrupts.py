"""An interrupt cuts what a run is waiting on (issue 19): the model call in flight (the real
SDK's connection to the fake server is closed, the partial answer kept and marked) and a
read-only tool; a tool with side effects runs to its end. Every tool call has a result."""

from __future__ import annotations

import asyncio

from loom import Agent, Model, ModelResponse, RunStatus, ToolCall, tool
from loom.providers.base import ModelRequest
from tests.fakes.llm_server import (
    ANTHROPIC_MESSAGES,
    FakeLLMServer,
    FakeReply,
    anthropic_message,
    anthropic_stream,
)
from tests.providers_support import OPEN_AGENTS, _close_agents, fast_retry  # noqa: F401

CUT_SHORT = "[answer cut short: the run was interrupted]"


def claude(fake: FakeLLMServer) -> Agent:
    model = Model.anthropic(
        "claude-sonnet-4-6", api_key="test-key", base_url=fake.anthropic_base_url,
        retry=fast_retry(),
    )  # fmt: skip
    agent = Agent(model, "You answer.")
    OPEN_AGENTS.append(agent)
    return agent


async def test_an_interrupt_closes_the_model_stream_and_keeps_the_partial_answer(
    fake_llm: FakeLLMServer,
) -> None:
    text = "The first part of a long answer, then a great deal more."
    # One event every 0.3 s: about 5 s in all, and the interrupt lands in the second.
    events = anthropic_stream(text, fragments=8)
    fake_llm.script(ANTHROPIC_MESSAGES, FakeReply(sse=events, event_delay=0.3))
    agent = claude(fake_llm)
    session = agent.session("s")
    run = session.start("Explain.", stream=True)
    async for event in run.events():
        if event.type == "model.token":
            run.interrupt("a page came in")
            break
    result = await asyncio.wait_for(run.wait(), 3)
    assert result.status is RunStatus.INTERRUPTED
    assert result.error == "a page came in"
    await asyncio.sleep(0.2)  # the server thread notices the closed connection
    assert fake_llm.cut == 1
    [user, answer] = session.history
    assert user.role == "user"
    assert answer.role == "assistant"
    assert answer.content.endswith(CUT_SHORT)
    assert text.startswith(answer.content.removesuffix(CUT_SHORT).strip())
    assert answer.content.removesuffix(CUT_SHORT).strip()  # something had streamed


async def test_an_interrupt_closes_a_call_waiting_for_its_first_byte(
    fake_llm: FakeLLMServer,
) -> None:
    fake_llm.script(ANTHROPIC_MESSAGES, FakeReply(json=anthropic_message("late"), delay=30))
    agent = claude(fake_llm)
    run = agent.session("s").start("Explain.")
    for _ in range(500):
        if fake_llm.requests:
            break
        await asyncio.sleep(0.01)
    run.interrupt("a page came in")
    result = await asyncio.wait_for(run.wait(), 3)
    assert result.status is RunStatus.INTERRUPTED
    for _ in range(50):
        if fake_llm.cut:
            break
        await asyncio.sleep(0.05)
    assert fake_llm.cut == 1


async def test_an_interrupt_stops_read_only_tools_and_lets_writes_finish() -> None:
    entered = asyncio.Event()
    wrote: list[str] = []

    @tool(read_only=True)
    async def search(query: str) -> str:
        """Search slowly."""
        entered.set()
        await asyncio.sleep(30)
        return "found"

    @tool
    async def write(note: str) -> str:
        """Write a note."""
        await asyncio.sleep(0.05)
        wrote.append(note)
        return "written"

    turns = iter(
        [
            ModelResponse.of_tool_calls(
                ToolCall("w", "write", {"note": "n"}), ToolCall("r", "search", {"query": "q"})
            ),
            ModelResponse(text="never asked"),
        ]
    )

    def model(request: ModelRequest) -> ModelResponse:
        return next(turns)

    session = Agent(Model.function(model), "You act.", tools=[search, write]).session("s")
    run = session.start("Go.")
    await asyncio.wait_for(entered.wait(), 5)
    run.interrupt("a page came in")
    result = await asyncio.wait_for(run.wait(), 3)
    assert result.status is RunStatus.INTERRUPTED
    assert wrote == ["n"]  # the write was not cut halfway
    results = {m.tool_call_id: m for m in session.history if m.role == "tool"}
    assert set(results) == {"w", "r"}  # no call without a result
    assert results["w"].content == "written"
    assert results["r"].is_error
    assert "interrupted" in results["r"].content
