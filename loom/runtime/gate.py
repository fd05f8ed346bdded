"""The quality gate's step in a run: after the model's final answer, the runtime's judge
(``Runtime.quality``, a ``QualityJudge``) reviews the work. Its model call is one of the
run's: it is counted in the run's usage (and cost) and shown in its events. A gate with a
``model`` of its own (``QualityGate.criteria([...], model=...)``) is asked on that model
instead of the agent's; the ``quality.verdict`` event names the model that judged and what
its calls used (``judge``), which the run's usage includes.
"""

from __future__ import annotations

from dataclasses import dataclass

from loom.core.messages import Message, Usage
from loom.core.quality import QualityJudge, QualityVerdict, Review
from loom.generation import Generation
from loom.providers.base import ModelProvider, ModelRequest
from loom.providers.pricing import apply_cost
from loom.runtime.run_state import RunState

CRITERIA_KEY = "criteria"
"""Run metadata naming a task's own criteria (``RuntimeTask.criteria``)."""
SPRINT_KEY = "sprint"
"""Run metadata: the sprint a run of a long-running harness is in."""


@dataclass(frozen=True, slots=True)
class Judging:
    """What a loop lends its gate: the model a judge asks, and the runtime's criteria."""

    provider: ModelProvider
    generation: Generation
    criteria: tuple[str, ...] = ()

    def judged_by(self, gate: object) -> ModelProvider:
        """The model that judges for ``gate``: its own ``model`` if it has one, else the
        agent's."""
        own = getattr(gate, "model", None)
        return own if isinstance(own, ModelProvider) else self.provider


def review_of(
    loop: Judging,
    state: RunState,
    provider: ModelProvider | None = None,
    spent: Usage | None = None,
) -> Review:
    """The work of ``state`` so far, for a judge; ``ask`` calls ``provider`` (the loop's
    model unless given), its usage added to the run's and to ``spent``."""
    model = provider or loop.provider
    listed = state.metadata.get(CRITERIA_KEY)
    # Only a list is a task's criteria (a caller's own metadata may use the key otherwise).
    task_criteria = tuple(str(c) for c in listed) if isinstance(listed, list | tuple) else ()

    async def ask(instructions: str, prompt: str) -> str:
        request = ModelRequest(
            instructions=instructions,
            messages=[Message.user(prompt)],
            tools=[],
            generation=loop.generation,
            run_id=state.run.id,
            session_id=state.run.session_id,
            iteration=state.iteration,
        )
        state.run.emit("quality.judging", iteration=state.iteration, model=model.name)
        response = await model.complete(request)
        usage = apply_cost(response.usage, response.model or model.name)
        state.usage.add(usage)
        if spent is not None:
            spent.add(usage)
        return response.text

    return Review(
        input=state.run.input,
        output=state.output,
        transcript=tuple(state.transcript),
        criteria=tuple(dict.fromkeys((*loop.criteria, *task_criteria))),
        ask=ask,
        metadata=state.metadata,
    )


async def judge(loop: Judging, state: RunState, gate: QualityJudge) -> QualityVerdict | None:
    """The gate's verdict on the run's work (kept on ``state``), announced as an event."""
    model, spent = loop.judged_by(gate), Usage()
    verdict = await gate.evaluate(review_of(loop, state, model, spent))
    if verdict is None:
        return None
    sprint = int(state.metadata.get(SPRINT_KEY) or 1)
    if verdict.sprint != sprint:
        verdict = QualityVerdict(verdict.criteria, sprint=sprint)
    state.quality = verdict
    judge_ = {"model": model.name, "usage": spent.to_dict()} if spent.requests else None
    state.run.emit("quality.verdict", **verdict.to_dict(), judge=judge_)
    return verdict


__all__ = ["CRITERIA_KEY", "SPRINT_KEY", "Judging", "judge", "review_of"]
