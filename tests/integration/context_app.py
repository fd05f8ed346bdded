"""The APP of the context integration test: a small context budget, and a summariser that
signs each summary with its process id, extending the earlier summary it is given."""

from __future__ import annotations

import os

from loom import Agent, ContextProtocol, ContinuityPolicy, Model, ModelRequest, Runtime
from loom.daemon import Daemon
from loom.runtime.context import SUMMARY_INSTRUCTIONS

EARLIER, FOLD = "Earlier summary:\n", "\n\nConversation to fold in:"


def respond(request: ModelRequest) -> str:
    if request.instructions == SUMMARY_INSTRUCTIONS:
        prompt = request.messages[0].content
        earlier = prompt[len(EARLIER) :].split(FOLD)[0] if prompt.startswith(EARLIER) else ""
        return f"{earlier} [summary by {os.getpid()}]".strip()
    return "handled " + "h" * 300


runtime = Runtime.sdk(
    context=ContextProtocol.manager(max_tokens=1500), continuity=ContinuityPolicy.handoff()
)
daemon = Daemon(
    Agent(Model.function(respond, name="context"), "You are a test agent.", runtime=runtime)
)
