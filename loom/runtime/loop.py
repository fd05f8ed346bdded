"""The agent loop: model turn, tool calls, model turn, until a final answer or a limit.

Every way a run can end is explicit here, and each one leaves a transcript in which every
tool call has a result, so the next run of the session can be sent to any provider.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loom.core.checkpoints import MemoryToolJournal, RunCheckpoint
from loom.core.governance import Governor, RateLimits
from loom.core.hooks import HookManager
from loom.core.messages import Message, Usage, well_formed
from loom.errors import AuthenticationError, ProviderError
from loom.generation import Generation
from loom.logs import scrub_keys
from loom.providers.base import ModelProvider, ModelRequest, ModelResponse, StreamDelta
from loom.providers.pricing import apply_cost
from loom.runtime.config import Runtime
from loom.runtime.context import (
    SUMMARY_INSTRUCTIONS,
    ContextWindow,
    DropOldestTurns,
    summary_prompt,
)
from loom.runtime.delegation import Delegation
from loom.runtime.gate import Judging
from loom.runtime.harness import sprints
from loom.runtime.history import WorkingHistory
from loom.runtime.run import Artifact, Run, RunInterrupted, RunResult, RunStatus, RunSuspended
from loom.runtime.run_state import RunState
from loom.runtime.tool_calls import ToolCalls
from loom.tools import ToolRegistry

logger = logging.getLogger("loom.runtime")


class _ModelCallFailed(Exception):
    """A model call failed; the run ends failed with this reason."""


class _Suspended(Exception):
    """The run was suspended while it waited for approvals; its checkpoint is kept."""


class _CutShort(Exception):
    """An interrupt cancelled the model call in flight; ``partial`` is what had streamed."""

    def __init__(self, partial: str) -> None:
        super().__init__(partial)
        self.partial = partial


CUT_SHORT = "[answer cut short: the run was interrupted]"
"""Ends the assistant turn a run keeps of a model call an interrupt cancelled."""


@dataclass(slots=True)
class AgentLoop:
    """Runs one run of an agent against a session's working history."""

    provider: ModelProvider
    instructions: str
    tools: ToolRegistry
    runtime: Runtime
    generation: Generation
    hooks: HookManager
    governor: Governor | None = None
    rate_limits: RateLimits | None = None
    delegation: Delegation | None = None
    skills: tuple[tuple[str, str], ...] = ()
    """``(name, when_to_use)`` of the skills ``load_skill`` offers, listed in ``C_skill``."""
    calls: ToolCalls = field(init=False)

    def __post_init__(self) -> None:
        if self.runtime.criteria:
            criteria = "\n".join(f"- {c}" for c in self.runtime.criteria)
            self.instructions = f"{self.instructions}\n\nAcceptance criteria:\n{criteria}".strip()
        self.calls = ToolCalls(
            self.tools, self.runtime, self.hooks, self.governor, self.rate_limits, self.delegation
        )

    def retune(self, runtime: Runtime) -> None:
        """Use ``runtime``'s limits for every later run (the daemon's settings override
        some of the agent's)."""
        self.runtime = self.calls.runtime = runtime

    def govern(self, governor: Governor | None, rate_limits: RateLimits | None) -> None:
        """Use ``governor`` (and ``rate_limits`` for its limits) for every later call."""
        self.governor = self.calls.governor = governor
        self.rate_limits = self.calls.rate_limits = rate_limits

    def governed_by(self, governor: Governor | None, rate_limits: RateLimits | None) -> AgentLoop:
        """This loop under another governance (a sub-agent's run under its parent's)."""
        if governor is self.governor and rate_limits is self.rate_limits:
            return self
        clone = copy.copy(self)
        clone.calls = copy.copy(self.calls)
        clone.govern(governor, rate_limits)
        return clone

    async def execute(
        self,
        run: Run,
        history: WorkingHistory,
        user_message: Message,
        *,
        metadata: dict[str, Any] | None = None,
        window: ContextWindow | None = None,
    ) -> tuple[RunResult, list[Message]]:
        """Run to the end; returns the result and the messages the run added. A run
        suspended while waiting for approvals returns ``awaiting_approval`` with its
        checkpoint and adds nothing yet.

        ``window`` carries the session's stored summary and the context policy; without
        one, ``history`` is compacted by dropping its oldest turns.
        """
        state = RunState(run, history, [], dict(metadata or {}), started_at=datetime.now(UTC))
        run.state = state
        if run.checkpointed:
            # A sub-agent started in a tree that has a checkpoint journals from the start.
            state.journal = run.journal
        await self.tools.prepare(run.session_id)
        self._open_window(state, window)
        state.append(user_message)
        state.settle()
        run.status = RunStatus.RUNNING
        run.input = user_message.content
        run.emit("run.started", input=user_message.content)
        if self.hooks.wants("before_run"):
            await self.hooks.emit(
                "before_run",
                run_id=run.id,
                session_id=run.session_id,
                prompt=user_message.content,
                context=state.metadata,
            )
        return await self._finish(state, await self._guarded(state))

    async def resume(
        self,
        run: Run,
        history: WorkingHistory,
        checkpoint: RunCheckpoint,
        *,
        window: ContextWindow | None = None,
    ) -> tuple[RunResult, list[Message]]:
        """Go on with a run from its checkpoint (in any process): the turn's decided calls
        run (each at most once, through ``run.journal``), then the loop continues. Returns
        like ``execute``, the transcript holding the whole run's messages."""
        state = RunState.from_checkpoint(run, history, checkpoint)
        state.journal = run.journal or MemoryToolJournal()
        run.state = state
        await self.tools.prepare(run.session_id)
        self._open_window(state, window)
        run.status = RunStatus.RUNNING
        run.input = checkpoint.input
        run.emit("run.resumed", approvals=[a.to_dict() for a in checkpoint.approvals])
        self.calls.settle_approvals(state, [a for a in state.approvals.values() if a.decided])
        return await self._finish(state, await self._guarded(state, resuming=True))

    def _open_window(self, state: RunState, window: ContextWindow | None) -> None:
        state.window = window or ContextWindow(
            DropOldestTurns(self.runtime.max_context_tokens), state.history
        )
        state.window.set_tools(self.tools.definitions())
        state.window.skills = list(self.skills)

    async def _finish(
        self, state: RunState, outcome: tuple[RunStatus, str | None]
    ) -> tuple[RunResult, list[Message]]:
        run, (status, error) = state.run, outcome
        if run.parent_run_id is None:
            # Nothing reads a top run's progress after this (a child's is read until its
            # parent has its result: ``Delegation.run`` lets go of it).
            run.state = None
        self._calibrate(state)
        checkpoint = None
        if status is RunStatus.AWAITING_APPROVAL:
            checkpoint = state.checkpoint()
        else:
            self.calls.close_open_calls(state, error or status.value)
        output = state.output
        result = RunResult(
            run_id=run.id,
            session_id=run.session_id,
            status=status,
            output=output,
            error=error,
            usage=state.usage,
            duration=state.elapsed(),
            artifacts=(Artifact("text", f"run://{run.id}/output", output),)
            if status is RunStatus.COMPLETED
            else (),
            started_at=state.started_at,
            finished_at=None if checkpoint else datetime.now(UTC),
            metadata=state.metadata,
            approvals=checkpoint.pending if checkpoint else (),
            checkpoint=checkpoint,
            quality=state.quality,
            parent_run_id=run.parent_run_id,
            depth=run.depth,
        )
        return result, [] if checkpoint else state.transcript

    async def conclude(self, run: Run, result: RunResult) -> None:
        """Announce the end (terminal event, hooks) and release everyone waiting."""
        # The outcome is decided: from here cancel() and interrupt() refuse, and even a
        # cancellation arriving while a hook runs cannot leave the run unfinished.
        run.status = result.status
        if result.status is RunStatus.AWAITING_APPROVAL:
            # Suspended, not ended: the run goes on wherever its decisions arrive.
            run.emit(
                "run.suspended",
                approvals=[a.to_dict() for a in result.approvals],
                usage=result.usage.to_dict(),
            )
            run.finish(result)
            return
        run.emit(
            f"run.{result.status.value}",  # type: ignore[arg-type]
            output=result.output,
            error=result.error,
            usage=result.usage.to_dict(),
        )
        try:
            if not result.ok and self.hooks.wants("run_error"):
                await self.hooks.emit(
                    "run_error",
                    run_id=run.id,
                    session_id=run.session_id,
                    prompt=run.input,
                    error=result.error,
                    status=result.status.value,
                )
            if self.hooks.wants("after_run"):
                await self.hooks.emit(
                    "after_run",
                    run_id=run.id,
                    session_id=run.session_id,
                    prompt=run.input,
                    result=result.to_dict(),
                )
        finally:
            run.finish(result)

    async def _guarded(
        self, state: RunState, *, resuming: bool = False
    ) -> tuple[RunStatus, str | None]:
        run = state.run
        limit = self.runtime.timeout
        try:
            async with asyncio.timeout(
                None if limit is None else max(limit - state.worked, 0.0)
            ) as deadline:
                state.deadline = deadline
                if resuming:
                    stopped = await self._settle_turn(state)
                    if stopped is not None:
                        return stopped
                judging = Judging(self.provider, self.generation, self.runtime.criteria)
                return await sprints(
                    state,
                    self._steps,
                    gate=self.runtime.quality,
                    harness=self.runtime.harness,
                    judging=judging,
                )
        except TimeoutError:
            return RunStatus.FAILED, f"run timed out after {self.runtime.timeout:g}s"
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if run.cancel_reason is None or task is None:
                raise  # cancelled from outside (shutdown): the session records it
            task.uncancel()
            return RunStatus.CANCELLED, run.cancel_reason
        except _ModelCallFailed as failure:
            return RunStatus.FAILED, str(failure)
        except _Suspended:
            return RunStatus.AWAITING_APPROVAL, None
        except _CutShort as cut:
            # The partial answer stays in the transcript, marked, so the next run knows
            # what was said before the interrupt; the transcript still alternates.
            text = f"{cut.partial}\n\n{CUT_SHORT}" if cut.partial else CUT_SHORT
            state.append(Message.assistant(text))
            state.output = cut.partial
            return RunStatus.INTERRUPTED, run.interrupt_reason or "interrupted"

    async def _steps(self, state: RunState) -> tuple[RunStatus, str | None]:
        run = state.run
        for iteration in range(state.iteration + 1, self.runtime.max_iterations + 1):
            if run.interrupt_requested():
                return RunStatus.INTERRUPTED, run.interrupt_reason or "interrupted"
            state.iteration = iteration
            request = await self._request(state, iteration)
            response = await self._call_model(state, request)
            state.append(response.message())
            state.output = response.text
            if not response.tool_calls:
                return self._final(response)
            if await self.calls.review(state, response.tool_calls):
                await self._wait_for_people(state)
            elif state.journal is not None:
                # A run that has had a checkpoint keeps one for every turn, taken before
                # the turn's calls run: resumed after a crash, it goes on from here (the
                # journal knows these calls) instead of asking the model again.
                await state.journal.turn(state.checkpoint())
            stopped = await self._settle_turn(state)
            if stopped is not None:
                return stopped
        return (
            RunStatus.FAILED,
            f"max iterations reached: {self.runtime.max_iterations} model calls "
            "without a final answer",
        )

    async def _settle_turn(self, state: RunState) -> tuple[RunStatus, str | None] | None:
        """Run the turn's calls that may run and close the turn; a status if the run stops."""
        run = state.run
        if run.interrupt_requested():
            return RunStatus.INTERRUPTED, run.interrupt_reason or "interrupted"
        now = datetime.now(UTC)
        for call_id, approval in list(state.approvals.items()):
            if not approval.decided and approval.expired(now):
                state.approvals[call_id] = lapsed = approval.expire(now)
                self.calls.settle_approvals(state, [lapsed])
        if any(not a.decided for a in state.approvals.values()):
            await self._wait_for_people(state)  # resumed before every decision came
            if run.interrupt_requested():
                return RunStatus.INTERRUPTED, run.interrupt_reason or "interrupted"
        await self.calls.run(state)
        if any(c.id in state.children and c.id not in state.results for c in state.open_calls):
            # Sub-agents were suspended with the run (the daemon, past its hold): the tree
            # ends here with their checkpoints in its own, its finished calls' results too.
            raise _Suspended
        if run.interrupt_requested():
            return RunStatus.INTERRUPTED, run.interrupt_reason or "interrupted"
        self.calls.close_open_calls(state, "")
        return None

    async def _wait_for_people(self, state: RunState) -> None:
        """Pause the run until every approval is decided; its checkpoint is taken first,
        and from then on its calls are journaled. The wait does not count as work."""
        run = state.run
        state.journal = state.journal or run.journal or MemoryToolJournal()
        pending = [a for a in state.approvals.values() if not a.decided]
        checkpoint = state.checkpoint()
        run.pause(
            RunResult(
                run_id=run.id,
                session_id=run.session_id,
                status=RunStatus.AWAITING_APPROVAL,
                output=state.output,
                usage=state.usage,
                duration=state.elapsed(),
                started_at=state.started_at,
                metadata=state.metadata,
                approvals=tuple(pending),
                checkpoint=checkpoint,
            )
        )
        # The deadline stops while people decide, and goes on with the time that was left.
        deadline, loop = state.deadline, asyncio.get_running_loop()
        due = deadline.when() if deadline is not None else None
        left = None if due is None else due - loop.time()
        if deadline is not None:
            deadline.reschedule(None)
        clock = time.perf_counter()
        try:
            decided = await run.decisions()
        except RunSuspended:
            # Decisions taken here before the suspension go into its checkpoint.
            for approval in run.decided:
                state.approvals[approval.call_id] = approval
            raise _Suspended from None
        finally:
            state.waited += time.perf_counter() - clock
            if deadline is not None and left is not None:
                deadline.reschedule(loop.time() + left)
        self.calls.settle_approvals(state, decided)
        run.resume()

    @staticmethod
    def _final(response: ModelResponse) -> tuple[RunStatus, str | None]:
        if response.stop_reason == "max_tokens":
            return RunStatus.FAILED, "model output truncated: the max_output_tokens limit was hit"
        if response.stop_reason == "refusal":
            return RunStatus.FAILED, "the model refused the request"
        if response.stop_reason == "context_window_exceeded":
            return RunStatus.FAILED, "the request exceeded the model's context window"
        return RunStatus.COMPLETED, None

    async def _call_model(self, state: RunState, request: ModelRequest) -> ModelResponse:
        run = state.run
        stream = self.generation.stream or run.streamed
        run.emit(
            "model.request",
            iteration=request.iteration,
            messages=len(request.messages),
            tools=len(request.tools),
        )
        if self.hooks.wants("before_llm"):
            await self.hooks.emit(
                "before_llm",
                run_id=run.id,
                session_id=run.session_id,
                request=request,
                iteration=request.iteration,
                stream=stream,
            )

        partial: list[str] = []

        async def on_delta(delta: StreamDelta) -> None:
            if delta.kind == "text":
                partial.append(delta.text)
                run.emit("model.token", text=delta.text)
            elif delta.kind == "thinking":
                run.emit("model.thinking", text=delta.text)
            else:
                run.emit(
                    "model.tool_input",
                    text=delta.text,
                    tool_call_id=delta.tool_call_id,
                    tool_name=delta.tool_name,
                )

        try:
            # An interrupt cancels the call in flight (the provider's stream is closed)
            # rather than waiting for an answer nobody will act on.
            response = await run.unless_interrupted(
                self.provider.complete(request, on_delta if stream else None)
            )
        except RunInterrupted:
            said = well_formed("".join(partial))
            run.emit("model.interrupted", iteration=request.iteration, partial=said)
            raise _CutShort(said) from None
        except Exception as exc:
            # The reason reaches results, replies, hooks and logs: no key it may quote.
            reason = scrub_keys(describe_model_error(exc))
            if self.hooks.wants("after_llm"):
                await self.hooks.emit(
                    "after_llm",
                    run_id=run.id,
                    session_id=run.session_id,
                    request=request,
                    response=None,
                    iteration=request.iteration,
                    stream=stream,
                    error=reason,
                )
            raise _ModelCallFailed(reason) from exc
        state.usage.add(apply_cost(response.usage, response.model or self.provider.name))
        run.emit(
            "model.response",
            iteration=request.iteration,
            text=response.text,
            tool_calls=[call.name for call in response.tool_calls],
            stop_reason=response.stop_reason,
            usage=response.usage.to_dict(),
        )
        if self.hooks.wants("after_llm"):
            await self.hooks.emit(
                "after_llm",
                run_id=run.id,
                session_id=run.session_id,
                request=request,
                response=response,
                iteration=request.iteration,
                stream=stream,
                error=None,
            )
        return response

    async def _request(self, state: RunState, iteration: int) -> ModelRequest:
        """The next request, rendered from the context window (compacted if need be)."""
        window = state.window
        assert window is not None
        self._calibrate(state)
        run = state.run
        instructions, compaction = await window.fit(
            self.instructions,
            state.transcript,
            state.transcript_chars,
            lambda previous, messages, budget: self._summarise(state, previous, messages, budget),
            run.id,
        )
        if compaction is not None:
            payload = compaction.payload(window.policy.max_tokens)
            run.emit("context.compacted", **payload)
            if self.hooks.wants("on_context_compact"):
                await self.hooks.emit(
                    "on_context_compact",
                    run_id=run.id,
                    session_id=run.session_id,
                    iteration=iteration,
                    **payload,
                )
        state.history = window.history
        run_chars = window.run_chars(state.transcript_chars)
        state.last_request_chars = window.request_chars(instructions, run_chars)
        state.input_tokens_seen = state.usage.input_tokens
        tools = self.tools.definitions()
        return ModelRequest(
            instructions=instructions,
            messages=[*window.history.messages, *window.run_messages(state.transcript)],
            tools=self.delegation.offered(tools, run) if self.delegation else tools,
            generation=self.generation,
            run_id=run.id,
            session_id=run.session_id,
            iteration=iteration,
            context_chars=window.history.chars + run_chars,
        )

    @staticmethod
    def _calibrate(state: RunState) -> None:
        """Learn tokens per character from what the provider reported for the last request."""
        if state.window is not None and state.last_request_chars:
            reported = Usage(input_tokens=state.usage.input_tokens - state.input_tokens_seen)
            state.window.counter.observe(state.last_request_chars, reported)
            state.last_request_chars = 0

    async def _summarise(
        self, state: RunState, previous: str | None, messages: Sequence[Message], budget: int
    ) -> str:
        request = ModelRequest(
            instructions=SUMMARY_INSTRUCTIONS,
            messages=[Message.user(summary_prompt(previous, messages, budget))],
            tools=[],
            generation=self.generation,
            run_id=state.run.id,
            session_id=state.run.session_id,
        )
        response = await self.provider.complete(request)
        state.usage.add(apply_cost(response.usage, response.model or self.provider.name))
        return response.text


def describe_model_error(exc: BaseException) -> str:
    """The reason a run failed on a model call, worded for the person reading it."""
    if isinstance(exc, AuthenticationError):
        return f"authentication failed: {exc}"
    if isinstance(exc, ProviderError):
        return f"provider error: {exc}"
    return f"model call failed: {type(exc).__name__}: {exc}"
