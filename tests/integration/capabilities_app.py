"""The APP of the capabilities integration test: an agent with a read-only log folder, the
web (loopback allowed for the test's health server) and a shell whose commands need
approval. Its model answers an alert by reading the log, fetching the health URL and
asking to run the restart command, in that order.

``LOOM_TEST_ROOT`` is the folder with ``app.log``; ``LOOM_TEST_HEALTH_URL`` the health URL;
``LOOM_TEST_RESTART`` the restart command the model asks for.
"""

from __future__ import annotations

import os

from loom import Agent, Capability, Model, ModelRequest, ModelResponse, ToolCall
from loom.daemon import Daemon


def respond(request: ModelRequest) -> ModelResponse:
    step = sum(1 for m in request.messages if m.role == "tool" and m.tool_call_id
               and m.tool_call_id.endswith(request.run_id))  # fmt: skip
    calls = [
        ("read_file", {"path": "app.log"}),
        ("fetch_url", {"url": os.environ["LOOM_TEST_HEALTH_URL"]}),
        ("run_command", {"command": os.environ["LOOM_TEST_RESTART"]}),
    ]
    if step < len(calls):
        name, arguments = calls[step]
        return ModelResponse.of_tool_calls(ToolCall(f"{name}-{request.run_id}", name, arguments))
    results = [m.content for m in request.messages if m.role == "tool"][-3:]
    return ModelResponse(text=" | ".join(r.strip()[:80] for r in results))


root = os.environ["LOOM_TEST_ROOT"]
agent = Agent(
    Model.function(respond, name="capabilities"),
    "You keep the api healthy.",
    capabilities=[
        Capability.files(root=root, read_only=True),
        Capability.web(allow_private=True),
        Capability.shell(require_approval=True, cwd=root, timeout=30),
    ],
)
daemon = Daemon(agent)
