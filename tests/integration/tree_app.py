"""The APP of the run-tree integration tests: a lead agent that hands every task to a
``fixer`` sub-agent, whose ``restart`` tool needs approval and records its effect in a
file.

``LOOM_TEST_EFFECTS`` is the file ``restart`` appends ``restart <service> <pid>`` to,
outside Redis, so a test counts side effects whatever happens to the processes. A service
named ``slow...`` keeps ``restart`` busy ``LOOM_TEST_TOOL_SECONDS`` after its effect, so a
test can kill the worker while the approved call runs.
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


def lead(request: ModelRequest) -> ModelResponse:
    results = [m for m in request.messages if m.role == "tool"]
    if results:
        return ModelResponse(text=f"lead: {results[0].content}")
    words = request.last_user_text().split()
    service = words[words.index("restart") + 1]
    task = {"task": f"restart {service}"}
    return ModelResponse.of_tool_calls(ToolCall(f"d-{request.run_id}", "delegate_to_fixer", task))


child = Agent(Model.function(fixer, name="fixer"), "You restart services.", name="fixer",
              tools=[restart], description="restarts services")  # fmt: skip
agent = Agent(Model.function(lead, name="lead"), "You hand work to the fixer.", subagents=[child])
daemon = Daemon(agent)
