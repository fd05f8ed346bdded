"""The APP of the MCP process tests: the default agent's MCP servers come from
``LOOM_MCP_SERVERS`` (as they would in production); the model adds the two numbers a signal
names (``add 2 3``) with the fake server's ``add`` tool, which needs approval by default."""

from __future__ import annotations

from loom import Agent, Model, ModelRequest, ModelResponse, Runtime, ToolCall
from loom.capabilities import MCPCapability
from loom.daemon import Daemon
from loom.daemon.settings import Settings


async def respond(request: ModelRequest) -> ModelResponse:
    if request.messages[-1].role == "tool":
        return ModelResponse(text=request.messages[-1].content)
    words = request.last_user_text().split()
    if "add" not in words:
        return ModelResponse(text="nothing to do")
    a, b = (int(w) for w in words[words.index("add") + 1 : words.index("add") + 3])
    call = ToolCall(f"add-{request.run_id}", "mcp__fake__add", {"a": a, "b": b})
    return ModelResponse.of_tool_calls(call)


agent = Agent(
    Model.function(respond, name="mcp"),
    "You add numbers.",
    capabilities=[MCPCapability.from_settings(s) for s in Settings().mcp_servers],
    runtime=Runtime.sdk(),
)
daemon = Daemon(agent)
