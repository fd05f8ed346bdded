"""The APP of the run-tree integration tests: a lead agent that hands every task to a
``fixer`` sub-agent, whose ``restart`` tool needs approval and records its effect in a
file.

``LOOM_TEST_EFFECTS`` is the file ``restart`` appends ``restart <service> <pid>`` to,
outside Redis, so a test counts side effects whatever happens to the processes. A service
named ``slow...`` keeps ``restart`` busy ``LOOM_TEST_TOOL_SECONDS`` after its effect, so a
test can kill the worker while the approved call runs.

A task that also says ``note <word>`` goes, in the same turn, to a ``scribe`` sub-agent
whose ``note`` tool needs no approval and records ``note <word>``; after its call the scribe
records ``scribe waiting`` and its next model turn takes ``LOOM_TEST_SCRIBE_SECONDS``, so a
test can kill the worker while the tree is held and the sibling has done its call.
"""

from __future__ import annotations

import asyncio
import os

from loom import Agent, Model, ModelRequest, ModelResponse, ToolCall, tool
from loom.daemon import Daemon


def _effect(line: str) -> None:
    with open(os.environ["LOOM_TEST_EFFECTS"], "a", encoding="utf-8") as effects:
        effects.write(f"{line} {os.getpid()}\n")


@tool(requires_approval=True)
async def restart(service: str) -> str:
    """Restart a service."""
    _effect(f"restart {service}")
    if service.startswith("slow"):
        await asyncio.sleep(float(os.environ.get("LOOM_TEST_TOOL_SECONDS", "30")))
    return f"{service} restarted"


def fixer(request: ModelRequest) -> ModelResponse:
    results = [m for m in request.messages if m.role == "tool"]
    if results:
        return ModelResponse(text=f"fixer: {results[0].content}")
    service = request.last_user_text().split()[-1]
    return ModelResponse.of_tool_calls(
        ToolCall(f"restart-{request.run_id}", "restart", {"service": service})
    )


@tool
def note(text: str) -> str:
    """Write a note."""
    _effect(f"note {text}")
    return f"noted {text}"


async def scribe(request: ModelRequest) -> ModelResponse:
    results = [m for m in request.messages if m.role == "tool"]
    if results:
        _effect("scribe waiting")
        await asyncio.sleep(float(os.environ.get("LOOM_TEST_SCRIBE_SECONDS", "0")))
        return ModelResponse(text=f"scribe: {results[0].content}")
    await asyncio.sleep(0.5)  # most often after the fixer asked (either order must hold)
    word = request.last_user_text().split()[-1]
    return ModelResponse.of_tool_calls(ToolCall("note-1", "note", {"text": word}))


def lead(request: ModelRequest) -> ModelResponse:
    results = [m for m in request.messages if m.role == "tool"]
    if results:
        return ModelResponse(text="lead: " + " + ".join(m.content for m in results))
    words = request.last_user_text().split()
    service = words[words.index("restart") + 1]
    task = {"task": f"restart {service}"}
    calls = [ToolCall(f"d-{request.run_id}", "delegate_to_fixer", task)]
    if "note" in words:
        what = {"task": f"note {words[words.index('note') + 1]}"}
        calls.append(ToolCall(f"n-{request.run_id}", "delegate_to_scribe", what))
    return ModelResponse.of_tool_calls(*calls)


child = Agent(Model.function(fixer, name="fixer"), "You restart services.", name="fixer",
              tools=[restart], description="restarts services")  # fmt: skip
writer = Agent(Model.function(scribe, name="scribe"), "You write notes.", name="scribe",
               tools=[note], description="writes notes")  # fmt: skip
agent = Agent(
    Model.function(lead, name="lead"), "You hand work to the fixer.", subagents=[child, writer]
)
daemon = Daemon(agent)
