"""The APP of the sprint integration test: a long-running harness whose gate fails the
first sprint and passes the second.

Each sprint the model calls ``probe`` once, which appends ``probe <sprint> <pid>`` to the
file ``LOOM_TEST_EFFECTS`` (outside Redis), then answers. The judge passes once it sees two
probe results. The first model call of sprint 2 in the first process to reach it sleeps
``LOOM_TEST_SPRINT_SECONDS`` (a marker file next to the effects says it happened), so a test
can kill the worker between sprints.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from loom import Agent, Harness, Model, ModelRequest, ModelResponse, Runtime, ToolCall, tool
from loom.daemon import Daemon
from loom.policies.quality import JUDGE_INSTRUCTIONS, verdict_json

CRITERION = "two probes agree"


def _effects() -> Path:
    return Path(os.environ["LOOM_TEST_EFFECTS"])


@tool
def probe(sprint: int) -> str:
    """Probe the service."""
    with _effects().open("a", encoding="utf-8") as effects:
        effects.write(f"probe {sprint} {os.getpid()}\n")
    return f"probe {sprint} ok"


async def respond(request: ModelRequest) -> ModelResponse:
    if request.instructions == JUDGE_INSTRUCTIONS:
        probes = request.messages[0].content.count("probe: probe")
        met = probes >= 2
        return ModelResponse(verdict_json([(met, f"{probes} probe result(s) seen")]))
    sprint = sum(1 for m in request.messages if m.role == "user")
    if request.messages[-1].role == "tool":
        return ModelResponse(text=f"sprint {sprint} done")
    marker = _effects().with_suffix(".slept")
    if sprint == 2 and not marker.exists():
        marker.write_text(str(os.getpid()))
        await asyncio.sleep(float(os.environ.get("LOOM_TEST_SPRINT_SECONDS", "60")))
    call = ToolCall(f"probe{sprint}-{request.run_id[-8:]}", "probe", {"sprint": sprint})
    return ModelResponse.of_tool_calls(call)


agent = Agent(
    Model.function(respond, name="sprints"),
    "You probe the service.",
    tools=[probe],
    runtime=Runtime.long_running(criteria=[CRITERION], harness=Harness.long_running(3)),
)
daemon = Daemon(agent)
