"""Sprints: the loop's steps, judged by the quality gate, repeated under the harness.

One sprint is the agent loop's steps up to a final answer. The gate (``Runtime.quality``)
then judges the work; a PASS completes the run, a FAIL with sprints left (``Runtime.harness``,
a ``SprintPolicy``) sends the unmet criteria back to the agent as a new user turn of the same
run, and a FAIL on the last sprint fails the run with the unmet criteria as its error.

A sprint boundary is a checkpoint where the run can have one (the daemon gives every run a
journal): the run is then resumed from there after a crash, at the next sprint, and from
then on its turns are checkpointed and its tool calls journaled, so earlier sprints' calls
never run again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from loom.core.messages import Message
from loom.core.quality import QualityJudge, SprintPolicy
from loom.errors import AuthenticationError, ProviderError
from loom.runtime.gate import SPRINT_KEY, Judging, judge
from loom.runtime.run import RunStatus
from loom.runtime.run_state import RunState

Outcome = tuple[RunStatus, str | None]


async def sprints(
    state: RunState,
    steps: Callable[[RunState], Awaitable[Outcome]],
    *,
    gate: QualityJudge | None,
    harness: SprintPolicy | None,
    judging: Judging,
) -> Outcome:
    """Run ``steps`` sprint after sprint until the gate passes or the harness says stop."""
    max_sprints = harness.max_sprints if harness is not None else 1
    while True:
        status, error = await steps(state)
        if status is not RunStatus.COMPLETED or gate is None:
            return status, error
        try:
            verdict = await judge(judging, state, gate)
        except Exception as exc:  # a judge that cannot judge passes nothing: fail closed
            return RunStatus.FAILED, f"quality gate failed: the judge failed: {_describe(exc)}"
        if verdict is None or verdict.passed:
            return status, error
        if harness is None or verdict.sprint >= max_sprints:
            return RunStatus.FAILED, "quality gate failed: unmet criteria:\n" + (
                verdict.describe_unmet()
            )
        if state.run.interrupt_requested():
            return RunStatus.INTERRUPTED, state.run.interrupt_reason or "interrupted"
        await _next_sprint(state, harness.next_turn(verdict), verdict.sprint + 1)


def _describe(exc: Exception) -> str:
    if isinstance(exc, AuthenticationError):
        return f"authentication failed: {exc}"
    if isinstance(exc, ProviderError):
        return f"provider error: {exc}"
    return f"{type(exc).__name__}: {exc}"


async def _next_sprint(state: RunState, feedback: str, sprint: int) -> None:
    run = state.run
    state.metadata[SPRINT_KEY] = sprint
    state.append(Message.user(feedback))
    state.settle()
    run.emit("harness.sprint", sprint=sprint, feedback=feedback)
    journal = state.journal or run.journal
    if journal is not None:
        # The boundary is durable: a worker that dies from here on resumes at this sprint,
        # and every later turn is checkpointed and its calls journaled.
        state.journal = journal
        run.checkpointed = True
        await journal.turn(state.checkpoint())


__all__ = ["sprints"]
