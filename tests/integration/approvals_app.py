"""The APP of the approval integration tests: a model that restarts the service a signal
names (``restart <name>``), a tool that needs approval and records its effect in a file,
and a rate-limited ``ping`` shared by every worker.

``LOOM_TEST_EFFECTS`` is the file each tool call appends a line to (``<tool> <argument>
<pid>``), outside Redis, so a test counts side effects whatever happens to the processes.
A service named ``slow...`` keeps ``restart`` busy ``LOOM_TEST_TOOL_SECONDS`` after its
effect, so a test can kill the worker while the approved call runs.
"""

from __future__ import annotations

import asyncio
import os

from loom import (
    Agent,
    GovernancePolicy,
    Model,
    ModelRequest,
    ModelResponse,
    Runtime,
    ToolCall,
    tool,
)
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


@tool(read_only=True)
def ping(target: str) -> str:
    """Ping a host."""
    _effect(f"ping {target}")
    return f"{target} answers"


async def respond(request: ModelRequest) -> ModelResponse:
    if request.messages[-1].role == "tool":
        return ModelResponse(text=" | ".join(
            m.content for m in request.messages if m.role == "tool" and m.tool_call_id
            and m.tool_call_id.endswith(request.run_id)
        ))  # fmt: skip
    words = request.last_user_text().split()
    verb = next((w for w in ("restart", "ping") if w in words), None)
    if verb is None:
        return ModelResponse(text="nothing to do")
    target = words[words.index(verb) + 1]
    argument = {"service": target} if verb == "restart" else {"target": target}
    return ModelResponse.of_tool_calls(ToolCall(f"{verb}-{request.run_id}", verb, argument))


governance = GovernancePolicy.default(rate_limits={"ping": "10/minute"})
agent = Agent(
    Model.function(respond, name="approvals"),
    "You restart services when asked.",
    tools=[restart, ping],
    runtime=Runtime.sdk(governance=governance),
)
daemon = Daemon(agent)
