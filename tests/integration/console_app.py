"""The APP of the console's browser tests: ``restart <name>`` asks for a tool that needs
approval; ``html`` makes the model answer with markup that would run script if a page
rendered it as HTML; anything else is noted."""

from __future__ import annotations

from loom import Agent, Model, ModelRequest, ModelResponse, ToolCall, tool
from loom.daemon import Daemon

HOSTILE_ANSWER = (
    '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script><b>bold</b> & done'
)


@tool(requires_approval=True)
def restart(service: str) -> str:
    """Restart a service."""
    return f"{service} restarted"


async def respond(request: ModelRequest) -> ModelResponse:
    if request.messages[-1].role == "tool":
        return ModelResponse(text=f"done: {request.messages[-1].content}")
    words = request.last_user_text().split()
    if "restart" in words:
        target = words[words.index("restart") + 1]
        return ModelResponse.of_tool_calls(
            ToolCall(f"restart-{request.run_id}", "restart", {"service": target})
        )
    if "html" in words:
        return ModelResponse(text=HOSTILE_ANSWER)
    return ModelResponse(text="noted")


agent = Agent(Model.function(respond, name="console"), "You restart services.", tools=[restart])
daemon = Daemon(agent)
