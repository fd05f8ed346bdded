"""The agent loop: model turn, tool calls, model turn, until a final answer or a limit.

Every way a run can end is explicit here, and each one leaves a transcript in which every
tool call has a result, so the next run of the session can be sent to any provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loom.core.hooks import HookManager
from loom.core.messages import Message, ToolCall, Usage
from loom.errors import AuthenticationError, ProviderError
from loom.generation import Generation
from loom.logs import scrub_keys
from loom.providers.base import ModelProvider, ModelRequest, ModelResponse, StreamDelta
from loom.providers.pricing import apply_cost
from loom.runtime.config import Runtime
from loom.runtime.history import WorkingHistory, message_chars
from loom.runtime.run import Artifact, Run, RunResult, RunStatus
from loom.tools import ToolArgumentsError, ToolContext, ToolRegistry, render_result

logger = logging.getLogger("loom.runtime")

COMPACT_AT = 0.9
"""Compact the working history when a request reaches this share of the context budget..."""
COMPACT_TO = 0.7
"""...down to this share, so compaction does not run again on the very next call."""


class _ModelCallFailed(Exception):
    """A model call failed; the run ends failed with this reason."""


@dataclass(slots=True)
class _RunState:
    run: Run
    history: WorkingHistory
    transcript: list[Message]
    metadata: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    transcript_chars: int = 0
    output: str = ""
    open_calls: tuple[ToolCall, ...] = ()
    results: dict[str, Message] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)

    def append(self, message: Message) -> None:
        self.transcript.append(message)
        self.transcript_chars += message_chars(message)


@dataclass(slots=True)
class AgentLoop:
    """Runs one run of an agent against a session's working history."""

    provider: ModelProvider
    instructions: str
    tools: ToolRegistry
    runtime: Runtime
    generation: Generation
    hooks: HookManager

    def __post_init__(self) -> None:
        if self.runtime.criteria:
            criteria = "\n".join(f"- {c}" for c in self.runtime.criteria)
            self.instructions = f"{self.instructions}\n\nAcceptance criteria:\n{criteria}".strip()

    async def execute(
        self,
        run: Run,
        history: WorkingHistory,
        user_message: Message,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[RunResult, list[Message]]:
        """Run to the end; returns the result and the messages the run added."""
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        state = _RunState(run, history, [], dict(metadata or {}))
        state.append(user_message)
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
        status, error = await self._guarded(state)
        self._close_open_calls(state, error or status.value)
        output = state.output
        result = RunResult(
            run_id=run.id,
            session_id=run.session_id,
            status=status,
            output=output,
            error=error,
            usage=state.usage,
            duration=time.perf_counter() - clock,
            artifacts=(Artifact("text", f"run://{run.id}/output", output),)
            if status is RunStatus.COMPLETED
            else (),
            started_at=started_at,
            finished_at=datetime.now(UTC),
            metadata=state.metadata,
        )
        return result, state.transcript

    async def conclude(self, run: Run, result: RunResult) -> None:
        """Announce the end (terminal event, hooks) and release everyone waiting."""
        # The outcome is decided: from here cancel() and interrupt() refuse, and even a
        # cancellation arriving while a hook runs cannot leave the run unfinished.
        run.status = result.status
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

    async def _guarded(self, state: _RunState) -> tuple[RunStatus, str | None]:
        run = state.run
        try:
            async with asyncio.timeout(self.runtime.timeout):
                return await self._steps(state)
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

    async def _steps(self, state: _RunState) -> tuple[RunStatus, str | None]:
        run = state.run
        for iteration in range(1, self.runtime.max_iterations + 1):
            if run.interrupt_requested():
                return RunStatus.INTERRUPTED, run.interrupt_reason or "interrupted"
            await self._compact_if_needed(state, iteration)
            request = ModelRequest(
                instructions=self.instructions,
                messages=[*state.history.messages, *state.transcript],
                tools=self.tools.definitions(),
                generation=self.generation,
                run_id=run.id,
                session_id=run.session_id,
                iteration=iteration,
                context_chars=state.history.chars + state.transcript_chars,
            )
            response = await self._call_model(state, request)
            state.append(response.message())
            state.output = response.text
            if not response.tool_calls:
                return self._final(response)
            state.open_calls = response.tool_calls
            state.results = {}
            await self._run_tools(state, response.tool_calls, iteration)
            if run.interrupt_requested():
                return RunStatus.INTERRUPTED, run.interrupt_reason or "interrupted"
            self._close_open_calls(state, "")
        return (
            RunStatus.FAILED,
            f"max iterations reached: {self.runtime.max_iterations} model calls "
            "without a final answer",
        )

    @staticmethod
    def _final(response: ModelResponse) -> tuple[RunStatus, str | None]:
        if response.stop_reason == "max_tokens":
            return RunStatus.FAILED, "model output truncated: the max_output_tokens limit was hit"
        if response.stop_reason == "refusal":
            return RunStatus.FAILED, "the model refused the request"
        if response.stop_reason == "context_window_exceeded":
            return RunStatus.FAILED, "the request exceeded the model's context window"
        return RunStatus.COMPLETED, None

    async def _call_model(self, state: _RunState, request: ModelRequest) -> ModelResponse:
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

        async def on_delta(delta: StreamDelta) -> None:
            if delta.kind == "text":
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
            response = await self.provider.complete(request, on_delta if stream else None)
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

    async def _run_tools(self, state: _RunState, calls: Sequence[ToolCall], iteration: int) -> None:
        limit = asyncio.Semaphore(self.runtime.max_parallel_tools)

        async def bounded(call: ToolCall) -> None:
            async with limit:
                await self._run_tool(state, call, iteration)

        for batch in self._batches(calls):
            if state.run.interrupt_requested():
                return
            if len(batch) == 1:
                await self._run_tool(state, batch[0], iteration)
            else:
                await asyncio.gather(*(bounded(call) for call in batch))

    def _batches(self, calls: Sequence[ToolCall]) -> list[list[ToolCall]]:
        """Consecutive concurrency-safe calls run together; any other call runs alone."""
        batches: list[list[ToolCall]] = []
        for call in calls:
            if self._safe(call) and batches and self._safe(batches[-1][-1]):
                batches[-1].append(call)
            else:
                batches.append([call])
        return batches

    def _safe(self, call: ToolCall) -> bool:
        tool = self.tools.get(call.name)
        return tool is None or tool.concurrency_safe

    async def _run_tool(self, state: _RunState, call: ToolCall, iteration: int) -> None:
        run = state.run
        if self.hooks.wants("before_tool"):
            await self.hooks.emit(
                "before_tool",
                run_id=run.id,
                session_id=run.session_id,
                tool_name=call.name,
                arguments=call.arguments,
                tool_call_id=call.id,
                iteration=iteration,
            )
        run.emit(
            "tool.started", tool_call_id=call.id, tool_name=call.name, arguments=call.arguments
        )
        clock = time.perf_counter()
        state.started.add(call.id)
        content, is_error = await self._invoke(state, call)
        limit = self.runtime.max_tool_result_chars
        if len(content) > limit:
            content = f"{content[:limit]}\n[truncated: {len(content) - limit} more characters]"
        state.results[call.id] = Message.tool_result(call, content, is_error=is_error)
        run.emit(
            "tool.completed",
            tool_call_id=call.id,
            tool_name=call.name,
            is_error=is_error,
            output=content,
            duration=time.perf_counter() - clock,
        )
        if self.hooks.wants("after_tool"):
            await self.hooks.emit(
                "after_tool",
                run_id=run.id,
                session_id=run.session_id,
                tool_name=call.name,
                arguments=call.arguments,
                tool_call_id=call.id,
                result=content,
                success=not is_error,
                iteration=iteration,
            )

    async def _invoke(self, state: _RunState, call: ToolCall) -> tuple[str, bool]:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(t.name for t in self.tools) or "none"
            return f"unknown tool {call.name!r}; available tools: {known}", True
        if call.raw_arguments is not None and not call.arguments:
            return (
                f"arguments for tool {call.name!r} are not a JSON object: "
                f"{call.raw_arguments[:500]!r}",
                True,
            )
        context = ToolContext(
            run_id=state.run.id,
            session_id=state.run.session_id,
            tool_call_id=call.id,
            metadata=state.metadata,
        )
        try:
            async with asyncio.timeout(self.runtime.tool_timeout):
                value = await tool.invoke(call.arguments, context)
        except ToolArgumentsError as exc:
            return str(exc), True
        except TimeoutError:
            return f"tool {call.name!r} timed out after {self.runtime.tool_timeout:g}s", True
        except Exception as exc:
            logger.warning("tool %s raised %s: %s", call.name, type(exc).__name__, exc)
            return f"tool {call.name!r} failed: {type(exc).__name__}: {exc}", True
        return render_result(value), False

    def _close_open_calls(self, state: _RunState, reason: str) -> None:
        """Append the results of the last turn's calls, in call order, filling any gap."""
        if not state.open_calls:
            return
        for call in state.open_calls:
            what = "stopped before finishing" if call.id in state.started else "not run"
            message = state.results.get(call.id) or Message.tool_result(
                call, f"{what}: {reason}", is_error=True
            )
            state.append(message)
        state.open_calls = ()
        state.results = {}
        state.started = set()

    async def _compact_if_needed(self, state: _RunState, iteration: int) -> None:
        budget = self.runtime.max_context_tokens * 4
        used = state.history.chars + state.transcript_chars + len(self.instructions)
        if used < budget * COMPACT_AT or not state.history.messages:
            return
        keep = int(budget * COMPACT_TO) - state.transcript_chars - len(self.instructions)
        dropped = state.history.drop_oldest_turns(max(keep, 0))
        after = state.history.chars + state.transcript_chars + len(self.instructions)
        state.run.emit(
            "context.compacted",
            strategy="drop_oldest_turns",
            dropped_messages=dropped,
            rho_before=used / budget,
            rho_after=after / budget,
        )
        if self.hooks.wants("on_context_compact"):
            await self.hooks.emit(
                "on_context_compact",
                run_id=state.run.id,
                session_id=state.run.session_id,
                strategy="drop_oldest_turns",
                iteration=iteration,
                rho=used / budget,
                rho_after=after / budget,
                dropped_messages=dropped,
            )


def describe_model_error(exc: BaseException) -> str:
    """The reason a run failed on a model call, worded for the person reading it."""
    if isinstance(exc, AuthenticationError):
        return f"authentication failed: {exc}"
    if isinstance(exc, ProviderError):
        return f"provider error: {exc}"
    return f"model call failed: {type(exc).__name__}: {exc}"
