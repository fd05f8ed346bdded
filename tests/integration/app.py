"""The APP the integration tests run: ``loom worker tests.integration.app:daemon``.

The model is a function: it answers after ``LOOM_TEST_MODEL_DELAY`` seconds (default 0.05).
When the run's input contains ``LOOM_TEST_SLOW_WORD``, its first turn takes
``LOOM_TEST_SLOW_SECONDS`` (default 5) and asks for the harmless ``note`` tool, so an
interrupt requested meanwhile acts at the step boundary after that tool call.
Settings come from the ``LOOM_*`` environment, as ``Daemon()`` reads them here at import.
"""

from __future__ import annotations

import asyncio
import os

from loom import Agent, Model, ModelRequest, ModelResponse, ToolCall, tool
from loom.daemon import Daemon


@tool(read_only=True)
def note(text: str) -> str:
    """Write a note for later (has no effect)."""
    return f"noted: {text[:50]}"


def _first_user_text(request: ModelRequest) -> str:
    # The run's input is the last user message; tool results have the role "tool".
    return request.last_user_text()


async def respond(request: ModelRequest) -> ModelResponse:
    text = _first_user_text(request)
    slow_word = os.environ.get("LOOM_TEST_SLOW_WORD", "")
    if slow_word and slow_word in text and request.iteration == 1:
        await asyncio.sleep(float(os.environ.get("LOOM_TEST_SLOW_SECONDS", "5")))
        call = ToolCall(f"note-{request.run_id}", "note", {"text": "slow step done"})
        return ModelResponse.of_tool_calls(call)
    await asyncio.sleep(float(os.environ.get("LOOM_TEST_MODEL_DELAY", "0.05")))
    return ModelResponse(text=f"handled {len(text)} chars")


agent = Agent(Model.function(respond, name="integration"), "You are a test agent.", tools=[note])
daemon = Daemon(agent)
