"""A model turn's tool calls: reviewed by the hook and governance before any runs, then
run (journaled once the run has a checkpoint), every call ending with a result.

The order of checks for one call (docs/governance.md): an unknown tool or arguments that
are not an object are errors; the ``before_tool`` hook may deny the call or rewrite its
arguments; the governor's ``review`` allows, denies or asks a person; once every call of
the turn that needs a person is decided, the governor's ``admit`` (rate limits) runs just
before each call starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loom import metrics
from loom.core.approvals import Approval
from loom.core.checkpoints import JournalEntry, ToolJournal
from loom.core.governance import Governor, RateLimits, Ruling, ToolCallInfo, Verdict
from loom.core.hooks import DenyCall, HookManager
from loom.core.messages import Message, ToolCall
from loom.runtime.config import Runtime
from loom.runtime.delegation import ChildSuspended, Delegation
from loom.runtime.run import RunInterrupted
from loom.runtime.run_state import RunState
from loom.tools import Tool, ToolArgumentsError, ToolContext, ToolRegistry, render_result

logger = logging.getLogger("loom.runtime")

UNKNOWN_OUTCOME = (
    "outcome unknown: this call started before the run was stopped (its worker ended) and "
    "may or may not have taken effect; it was not run again. Check before retrying it."
)

STOPPED = "tool call stopped: the run was interrupted"
"""The result of a read-only call an interrupt stopped."""


@dataclass(slots=True)
class ToolCalls:
    """Reviews and runs the calls of one model turn for an agent loop."""

    tools: ToolRegistry
    runtime: Runtime
    hooks: HookManager
    governor: Governor | None = None
    rate_limits: RateLimits | None = None
    delegation: Delegation | None = None
    """The agent's sub-agents: their tools' calls are child runs."""

    # -- review ------------------------------------------------------------------------
    async def review(self, state: RunState, calls: Sequence[ToolCall]) -> list[Approval]:
        """Decide every call of the turn before any runs: denied calls get their error
        result now; the approvals returned are the calls that wait for a person."""
        state.open_calls, state.reviewed = tuple(calls), False
        state.results, state.started, state.arguments, state.approvals = {}, set(), {}, {}
        waiting: list[Approval] = []
        for call in calls:
            tool = self.tools.get(call.name)
            if tool is None or (call.raw_arguments is not None and not call.arguments):
                continue  # refused with the reason when it would run
            ruling = await self._consult_hook(state, call)
            if ruling is None:
                ruling = await self._review(state, tool, call)
            if ruling.verdict is Verdict.DENY:
                self._deny(state, call, ruling)
            elif ruling.verdict is Verdict.ASK:
                approval = Approval.request(
                    tool=call.name,
                    arguments=state.arguments_of(call),
                    call_id=call.id,
                    run_id=state.run.id,
                    session_id=state.run.session_id,
                    ttl=self.runtime.approval_ttl,
                    reason=ruling.reason,
                )
                state.approvals[call.id] = approval
                waiting.append(approval)
        if waiting:
            metrics.APPROVALS_REQUESTED.inc(len(waiting))
        state.reviewed = True
        return waiting

    async def _consult_hook(self, state: RunState, call: ToolCall) -> Ruling | None:
        """The ``before_tool`` hook: it may return ``DenyCall(reason)`` or new arguments
        (a dict). A handler that raises denies the call: a check that fails, fails closed."""
        if not self.hooks.wants("before_tool"):
            return None
        run = state.run
        try:
            answers = await self.hooks.consult(
                "before_tool",
                run_id=run.id,
                session_id=run.session_id,
                tool_name=call.name,
                arguments=call.arguments,
                tool_call_id=call.id,
                iteration=state.iteration,
            )
        except Exception as exc:
            logger.exception("before_tool hook failed for %s; the call is denied", call.name)
            return _failed_closed(exc, rule="hook", what="a before_tool hook")
        for answer in answers:
            if isinstance(answer, DenyCall):
                return Ruling(Verdict.DENY, answer.reason, "hook")
            if isinstance(answer, dict):
                state.arguments[call.id] = dict(answer)
        return None

    async def _review(self, state: RunState, tool: Tool[..., Any], call: ToolCall) -> Ruling:
        if self.governor is None:
            return Ruling(Verdict.ALLOW)
        try:
            return await self.governor.review(self._info(state, tool, call))
        except Exception as exc:
            logger.exception("governance review of %s failed; the call is denied", call.name)
            return _failed_closed(exc)

    @staticmethod
    def _info(state: RunState, tool: Tool[..., Any], call: ToolCall) -> ToolCallInfo:
        return tool.call_info(
            state.arguments_of(call),
            call_id=call.id,
            run_id=state.run.id,
            session_id=state.run.session_id,
        )

    def _deny(self, state: RunState, call: ToolCall, ruling: Ruling) -> None:
        reason = ruling.reason or "denied by governance"
        content = f"tool call denied ({ruling.rule or 'governance'}): {reason}"
        state.results[call.id] = Message.tool_result(call, content, is_error=True)
        self._announce_denial(state, call, ruling)

    def settle_approvals(self, state: RunState, decided: Sequence[Approval]) -> None:
        """Calls a person denied (or let expire) get their error result; approved ones run."""
        for approval in decided:
            if not approval.decided:
                continue
            state.approvals[approval.call_id] = approval
            if approval.approved:
                continue
            call = next(c for c in state.open_calls if c.id == approval.call_id)
            why = approval.message or "no reason given"
            if approval.lapsed:
                metrics.APPROVALS_EXPIRED.inc()
                what = "approval expired"
            else:
                what = "denied by " + (approval.decided_by or "a person")
            content = f"tool call not run: {what}: {why}"
            state.results[call.id] = Message.tool_result(call, content, is_error=True)
            state.run.emit(
                "tool.denied",
                tool_call_id=call.id,
                tool_name=call.name,
                arguments=approval.arguments,
                rule="approval",
                reason=f"{what}: {why}",
            )

    # -- running -----------------------------------------------------------------------
    async def run(self, state: RunState) -> None:
        """Run every call of the turn that has no result yet (approved or allowed)."""
        calls = [c for c in state.open_calls if c.id not in state.results]
        limit = asyncio.Semaphore(self.runtime.max_parallel_tools)

        async def bounded(call: ToolCall) -> None:
            async with limit:
                await self._run_one(state, call)

        for batch in self._batches(calls):
            if state.run.interrupt_requested():
                return
            if len(batch) == 1:
                await self._run_one(state, batch[0])
                continue
            try:  # one call failing (the journal unreachable) stops its siblings too
                async with asyncio.TaskGroup() as group:
                    for call in batch:
                        group.create_task(bounded(call))
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None

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

    async def _run_one(self, state: RunState, call: ToolCall) -> None:
        run = state.run
        arguments = state.arguments_of(call)
        run.emit("tool.started", tool_call_id=call.id, tool_name=call.name, arguments=arguments)
        clock = time.perf_counter()
        # Whether the call is journaled is fixed as it starts: should the run's tree get
        # its checkpoint meanwhile, a call already started is marked so there (``enlist``).
        state.started.add(call.id)
        journal = state.journal
        tool = self.tools.get(call.name)
        if tool is not None and tool.read_only:
            # A read-only call can be stopped by an interrupt and loses nothing; a call
            # with side effects runs to its end rather than stop half done.
            try:
                content, is_error = await run.unless_interrupted(
                    self._journaled(state, call, arguments, journal)
                )
            except RunInterrupted:
                content, is_error = STOPPED, True
        else:
            try:
                content, is_error = await self._journaled(state, call, arguments, journal)
            except ChildSuspended:
                return  # no result yet: the child's checkpoint is in the run's
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
                arguments=arguments,
                tool_call_id=call.id,
                result=content,
                success=not is_error,
                iteration=state.iteration,
            )

    async def _journaled(
        self,
        state: RunState,
        call: ToolCall,
        arguments: dict[str, Any],
        journal: ToolJournal | None,
    ) -> tuple[str, bool]:
        """Run the call once: with a journal (the run's when the call started), a call
        already finished gives its recorded result, and one started but never finished is
        not run again (unless idempotent)."""
        run_id = state.run.id
        if journal is None:
            content, is_error = await self._invoke(state, call, arguments)
            if state.journal is not None:
                # The run's tree got its checkpoint while this call ran (a child paused),
                # which marked it started: its result is kept, so a resumed run has it.
                await state.journal.finished(run_id, call.id, content, is_error)
            return content, is_error
        entry = (await journal.entries(run_id)).get(call.id)
        if entry is None and call.id in state.running:
            entry = JournalEntry(call.id)  # under way when the checkpoint was taken
        if entry is not None and entry.finished:
            return entry.content, entry.is_error
        tool = self.tools.get(call.name)
        delegated = self.delegation is not None and call.name in self.delegation.by_tool
        if entry is not None and not delegated and not (tool is not None and tool.idempotent):
            await journal.finished(run_id, call.id, UNKNOWN_OUTCOME, True)
            return UNKNOWN_OUTCOME, True
        if not delegated:
            # A delegation is not marked started: its effects are its child's calls, each
            # journaled on its own, and its child resumes from its checkpoint.
            await journal.started(run_id, call.id)
        content, is_error = await self._invoke(state, call, arguments)
        await journal.finished(run_id, call.id, content, is_error)
        return content, is_error

    async def _invoke(
        self, state: RunState, call: ToolCall, arguments: dict[str, Any]
    ) -> tuple[str, bool]:
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
        admitted = await self._admit(state, tool, call)
        if not admitted.allowed:
            self._announce_denial(state, call, admitted)
            return f"tool call denied ({admitted.rule}): {admitted.reason}", True
        if self.delegation is not None and call.name in self.delegation.by_tool:
            # A child run has its own timeout (its runtime's), not a tool's.
            return await self.delegation.run(
                state, call, arguments, self.governor, self.rate_limits
            )
        context = ToolContext(
            run_id=state.run.id,
            session_id=state.run.session_id,
            tool_call_id=call.id,
            metadata=state.metadata,
            interrupted=state.run.interrupt_requested,
        )
        try:
            async with asyncio.timeout(self.runtime.tool_timeout):
                value = await tool.invoke(arguments, context)
        except ToolArgumentsError as exc:
            return str(exc), True
        except TimeoutError:
            return f"tool {call.name!r} timed out after {self.runtime.tool_timeout:g}s", True
        except Exception as exc:
            logger.warning("tool %s raised %s: %s", call.name, type(exc).__name__, exc)
            return f"tool {call.name!r} failed: {type(exc).__name__}: {exc}", True
        return render_result(value), False

    async def _admit(self, state: RunState, tool: Tool[..., Any], call: ToolCall) -> Ruling:
        if self.governor is None or self.rate_limits is None:
            return Ruling(Verdict.ALLOW)
        try:
            return await self.governor.admit(self._info(state, tool, call), self.rate_limits)
        except Exception as exc:
            logger.exception("governance admission of %s failed; the call is denied", call.name)
            return _failed_closed(exc)

    @staticmethod
    def _announce_denial(state: RunState, call: ToolCall, ruling: Ruling) -> None:
        """A governance denial: the ``tool.denied`` event and the denials metric."""
        metrics.governance_denied(ruling.rule, call.name)
        state.run.emit(
            "tool.denied",
            tool_call_id=call.id,
            tool_name=call.name,
            arguments=state.arguments_of(call),
            rule=ruling.rule,
            reason=ruling.reason,
        )

    def close_open_calls(self, state: RunState, reason: str) -> None:
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
        state.past_approvals.extend(a for a in state.approvals.values() if a.decided)
        state.results, state.started, state.arguments, state.approvals = {}, set(), {}, {}
        state.reviewed, state.running = False, set()
        state.settle()


def _failed_closed(
    exc: Exception, *, rule: str = "error", what: str = "the governance check"
) -> Ruling:
    """A check that raised denies the call; the reason names the check and the error's
    type, never its text (which may hold arguments or secrets)."""
    return Ruling(
        Verdict.DENY, f"{what} failed ({type(exc).__name__}), so the call is denied", rule
    )


__all__ = ["STOPPED", "UNKNOWN_OUTCOME", "ToolCalls"]
