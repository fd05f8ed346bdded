"""Delegation: a tool call that is a sub-agent's run.

Each sub-agent is offered to the model as one tool (``task``: what to do). A call starts a
child run on the sub-agent's loop: its own run id, ``parent_run_id`` and depth, a fresh
history, its own instructions and tools, and the parent's session and governance. Only the
child's final answer comes back, as the call's result; its usage is added to the parent's.
Children of one model turn run in parallel up to the limit's ``max_parallel``; the top run is
depth 0 and a run at ``max_depth`` is offered no delegation tool. A cancel or an interrupt
of the parent reaches its children.

A child that waits for a person's approval pauses the parent on the same approval
(``run.approve(id)`` on the parent decides it for the child). The parent's checkpoint then
holds the child's (``RunCheckpoint.children``, by delegation call id) and lists the child's
approvals with its own, so the daemon keeps the whole tree under the session's fencing
token. When the parent is suspended (the daemon, past its hold), each paused child is
suspended too, the children still working are let finish (or pause), and the parent ends
``awaiting_approval`` with every child's checkpoint and every finished sibling's result.
Resumed anywhere, a delegation call with a child's checkpoint resumes that child (same run
id, its journal keeping each of its calls to one run) instead of starting a new one.
"""

from __future__ import annotations

import asyncio
import secrets
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from loom.core.checkpoints import JournalEntry, MemoryToolJournal, RunCheckpoint, ToolJournal
from loom.core.governance import Governor, RateLimits
from loom.core.messages import Message, ToolCall
from loom.core.quality import DelegationLimits
from loom.runtime.config import Runtime
from loom.runtime.history import WorkingHistory
from loom.runtime.run import Run, RunProgress, RunResult, RunStatus, RunSuspended
from loom.runtime.run_state import RunState
from loom.tools import Tool
from loom.tools.tool import ToolDefinition

TOOL_PREFIX = "delegate_to_"
MAX_GOVERNED_LOOPS = 64


class ChildSuspended(Exception):
    """A delegation call's child was suspended with its parent: the call has no result
    yet (its checkpoint is in the parent's ``RunState.children``)."""


def delegation_tool(agent_name: str, description: str) -> Tool[..., Any]:
    """The tool the model calls to hand ``agent_name`` a task (run by the loop, not here)."""

    async def delegate(task: str) -> str:
        raise RuntimeError(
            f"sub-agent {agent_name!r} runs only as a child of its parent's run (the agent "
            "loop runs this call); it cannot be called on its own"
        )

    summary = description.strip() or f"the {agent_name} agent"
    return Tool(
        delegate,
        name=f"{TOOL_PREFIX}{agent_name}",
        description=(
            f"Hand a task to a sub-agent: {summary}. It works on its own, with its own tools, "
            "and answers with its final answer only. Say everything it needs in `task`."
        ),
        read_only=False,
        concurrency_safe=True,
    )


class ChildLoop(Protocol):
    """What delegation needs of a sub-agent's loop (``AgentLoop``)."""

    @property
    def runtime(self) -> Runtime: ...

    async def execute(
        self,
        run: Run,
        history: WorkingHistory,
        user_message: Message,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[RunResult, list[Message]]: ...

    async def resume(
        self, run: Run, history: WorkingHistory, checkpoint: RunCheckpoint
    ) -> tuple[RunResult, list[Message]]: ...

    async def conclude(self, run: Run, result: RunResult) -> None: ...

    def governed_by(self, governor: Governor | None, rate_limits: RateLimits | None) -> ChildLoop:
        """The same loop under another governance."""
        ...


@dataclass(frozen=True, slots=True)
class SubAgent:
    """A sub-agent as the kernel runs it: its name, its tool and its loop."""

    name: str
    tool: Tool[..., Any]
    loop: ChildLoop


class Delegation:
    """The sub-agents of one agent loop and the limits of their delegation."""

    def __init__(self, subagents: Sequence[SubAgent], limits: DelegationLimits) -> None:
        self.limits = limits
        self.by_tool: dict[str, SubAgent] = {s.tool.name: s for s in subagents}
        self._slots: weakref.WeakKeyDictionary[Run, asyncio.Semaphore] = weakref.WeakKeyDictionary()
        self._pauses: weakref.WeakKeyDictionary[Run, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._loops: dict[
            tuple[str, int, int], tuple[ChildLoop, Governor | None, RateLimits | None]
        ] = {}

    def _governed(
        self, sub: SubAgent, governor: Governor | None, rate_limits: RateLimits | None
    ) -> ChildLoop:
        """The sub-agent's loop under the parent's governance, made once per governance."""
        key = (sub.name, id(governor), id(rate_limits))
        found = self._loops.get(key)
        if found is None or found[1] is not governor or found[2] is not rate_limits:
            found = (sub.loop.governed_by(governor, rate_limits), governor, rate_limits)
            if len(self._loops) >= MAX_GOVERNED_LOOPS:  # governance seldom changes: bounded
                self._loops.clear()
            self._loops[key] = found
        return found[0]

    def max_depth(self, run: Run) -> int:
        """The depth ``run``'s tree may reach: the top run's limit, inherited by children."""
        return run.max_depth if run.max_depth is not None else self.limits.max_depth

    def offered(self, definitions: list[ToolDefinition], run: Run) -> list[ToolDefinition]:
        """The tool definitions ``run`` may see: no delegation tool at the depth limit."""
        if run.depth < self.max_depth(run):
            return definitions
        return [d for d in definitions if d.name not in self.by_tool]

    async def run(
        self,
        state: RunState,
        call: ToolCall,
        arguments: Mapping[str, Any],
        governor: Governor | None,
        rate_limits: RateLimits | None,
    ) -> tuple[str, bool]:
        """Run the sub-agent behind ``call`` on ``arguments['task']`` (or resume its
        suspended child): the child's final answer (or why it has none) and whether that
        is an error. Raises ``ChildSuspended`` when the child is suspended with the parent."""
        sub, parent = self.by_tool[call.name], state.run
        limit = self.max_depth(parent)
        suspended = state.children.get(call.id)
        if suspended is None:
            if parent.depth >= limit:
                return f"delegation refused: depth {parent.depth} is the limit ({limit})", True
            task = arguments.get("task")
            if not isinstance(task, str) or not task.strip():
                return f"tool {call.name!r} needs a non-empty `task` string", True
        run_id = suspended.run_id if suspended else f"run_{secrets.token_hex(16)}"
        child = Run(run_id, parent.session_id, max_events=sub.loop.runtime.max_events)
        child.parent_run_id, child.depth, child.max_depth = parent.id, parent.depth + 1, limit
        # A child's calls and turns are journaled under its parent's journal (a run tree
        # has one), from the moment the tree has a checkpoint: resumed, it runs none of
        # them twice. A child started after that moment journals from its start.
        child.journal = ChildJournal(state, call.id)
        child.checkpointed = suspended is not None or state.journal is not None
        slots = self._slots.setdefault(parent, asyncio.Semaphore(self.limits.max_parallel))
        child_loop = self._governed(sub, governor, rate_limits)
        async with slots:
            if suspended is None:
                parent.emit(
                    "subagent.started",
                    agent=sub.name,
                    child_run_id=child.id,
                    depth=child.depth,
                    task=arguments.get("task"),
                )
                metadata = {**_inherited(state.metadata), "parent_run_id": parent.id}
                body = asyncio.create_task(_child(child_loop, child, str(task), metadata))
            else:
                child.checkpointed = True
                parent.emit(
                    "subagent.resumed", agent=sub.name, child_run_id=child.id, depth=child.depth
                )
                # Decisions are taken on the top run's checkpoint: pass them down.
                checkpoint = suspended.decided_by(state.known_approvals())
                body = asyncio.create_task(_resumed(child_loop, child, checkpoint))
            child.attach(body)
            parent.children.add(child)
            state.working[call.id] = child
            try:
                result = await self._follow(state, call.id, child, body)
            finally:
                parent.children.discard(child)
                state.working.pop(call.id, None)
                child.state = None
        if result.status is RunStatus.AWAITING_APPROVAL and result.checkpoint is not None:
            # Its usage so far stays in its checkpoint and is added once, when it ends.
            state.children[call.id] = result.checkpoint
            parent.emit(
                "subagent.suspended",
                agent=sub.name,
                child_run_id=child.id,
                approvals=[a.to_dict() for a in result.approvals],
            )
            raise ChildSuspended(child.id)
        state.children.pop(call.id, None)
        state.usage.add(result.usage)
        parent.emit(
            "subagent.completed",
            agent=sub.name,
            child_run_id=child.id,
            status=result.status.value,
            output=result.output,
            error=result.error,
            usage=result.usage.to_dict(),
        )
        if result.ok:
            return result.output, False
        return f"sub-agent {sub.name!r} {result.status.value}: {result.error}", True

    async def _follow(
        self, state: RunState, call_id: str, child: Run, body: asyncio.Task[RunResult]
    ) -> RunResult:
        """Wait for the child's end (or its suspension); its pauses for approval pause the
        parent too."""
        parent = state.run
        try:
            while True:
                changed = child.changed()
                await asyncio.wait((body, changed), return_when=asyncio.FIRST_COMPLETED)
                if body.done():
                    return body.result()
                paused = await child.wait()
                if paused.status is RunStatus.AWAITING_APPROVAL and not child.done():
                    await self._ask_for(state, call_id, child, paused)
        except asyncio.CancelledError:
            # The parent was cancelled (or shut down): the child ends as cancelled too.
            child.cancel(parent.cancel_reason or "the parent run was cancelled")
            await asyncio.wait((body,))
            raise

    async def _ask_for(self, state: RunState, call_id: str, child: Run, paused: RunResult) -> None:
        """Pause the parent on the child's approvals, and pass the decisions down. The
        parent's pause carries its checkpoint with the child's inside (and the child's
        approvals), so the daemon keeps the tree and takes decisions for it (over HTTP,
        the CLI, Slack) on any replica. When the parent is suspended instead, so is the
        child: its body then ends with its checkpoint, which ``run`` keeps."""
        parent = state.run
        lock = self._pauses.setdefault(parent, asyncio.Lock())
        async with lock:
            if not child.approvals:
                return
            if paused.checkpoint is not None:
                state.children[call_id] = paused.checkpoint
            # From now on every run of the tree journals its calls and turns: a sibling
            # going on while the tree waits runs none of them again when it resumes
            # elsewhere (its progress is in the checkpoint below).
            checkpointed(state)
            if not parent.suspending:
                parent.pause(
                    RunResult(
                        parent.id,
                        parent.session_id,
                        RunStatus.AWAITING_APPROVAL,
                        output=paused.output,
                        approvals=child.approvals,
                        checkpoint=state.checkpoint(),
                    )
                )
                try:
                    decided = await parent.decisions()
                except RunSuspended:
                    pass  # the whole tree is suspended: below
                else:
                    for approval in decided:
                        child.record_decision(approval)
                    if parent.interrupt_requested():
                        child.interrupt(parent.interrupt_reason or "interrupted")
                    parent.resume()
                    return
            child.suspend()


async def _child(loop: ChildLoop, run: Run, task: str, metadata: dict[str, Any]) -> RunResult:
    """A child run from start to end, announced like any run."""

    async def execute() -> RunResult:
        result, _ = await loop.execute(run, WorkingHistory(), Message.user(task), metadata=metadata)
        return result

    return await _announced(loop, run, execute())


async def _resumed(loop: ChildLoop, run: Run, checkpoint: RunCheckpoint) -> RunResult:
    """A suspended child run from its checkpoint to its end (or its next suspension)."""

    async def resume() -> RunResult:
        result, _ = await loop.resume(run, WorkingHistory(), checkpoint)
        return result

    return await _announced(loop, run, resume())


async def _announced(loop: ChildLoop, run: Run, body: Coroutine[Any, Any, RunResult]) -> RunResult:
    try:
        result = await body
    except asyncio.CancelledError:
        result = RunResult(
            run.id, run.session_id, RunStatus.CANCELLED, error=run.cancel_reason or "cancelled"
        )
    except Exception as exc:  # a bug, not a run outcome: still end the child honestly
        result = RunResult(
            run.id,
            run.session_id,
            RunStatus.FAILED,
            error=f"internal error: {type(exc).__name__}: {exc}",
        )
    result.parent_run_id, result.depth = run.parent_run_id, run.depth
    await loop.conclude(run, result)
    return result


def _inherited(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What of the parent's metadata a child keeps: who it works for, not the task's
    criteria or sprint."""
    return {k: v for k, v in metadata.items() if k in ("signals", "fencing_token", "worker")}


def checkpointed(state: RunProgress) -> ToolJournal:
    """The run of ``state`` has a checkpoint (it pauses on a child, or a child writes a
    turn): it journals from now on, and so does every run below it still working, each
    from where it has got to. Its journal is returned.

    Synchronous on purpose: a call that starts after this journals itself; one already
    under way is named in the checkpoint's ``running`` (the checkpoint is written whole),
    so no mark in the journal can race with the call's own result."""
    if state.journal is None:
        state.journal = state.run.journal or MemoryToolJournal()
    # Its end also ends the checkpoint (the worker forgets a checkpointed run's).
    state.run.checkpointed = True
    for child in list(state.working.values()):
        child.checkpointed = True  # not started yet: it journals from its start
        inner = child.state
        if inner is not None:
            if inner.journal is None:
                inner.journal = child.journal
            checkpointed(inner)
    return state.journal


class ChildJournal:
    """A child run's journal inside its parent's: entries under the parent's run, keyed
    ``<child run id>/<call id>`` (so the tree's journal goes when the top run ends, and a
    call id the model reused in two children stays two entries). A child's turn is written
    as its tree's checkpoint: the top run's, with where every child has got to inside."""

    def __init__(self, parent: RunState, call_id: str) -> None:
        self.parent = parent
        self.call_id = call_id

    @property
    def outer(self) -> ToolJournal:
        journal = self.parent.journal
        if journal is None:  # the child paused first: its tree has a checkpoint from now
            journal = self.parent.journal = self.parent.run.journal or MemoryToolJournal()
        return journal

    async def entries(self, run_id: str) -> dict[str, JournalEntry]:
        prefix = f"{run_id}/"
        found = await self.outer.entries(self.parent.run.id)
        return {
            key[len(prefix) :]: replace(entry, call_id=key[len(prefix) :])
            for key, entry in found.items()
            if key.startswith(prefix)
        }

    async def started(self, run_id: str, call_id: str) -> None:
        await self.outer.started(self.parent.run.id, f"{run_id}/{call_id}")

    async def finished(self, run_id: str, call_id: str, content: str, is_error: bool) -> None:
        await self.outer.finished(self.parent.run.id, f"{run_id}/{call_id}", content, is_error)

    async def turn(self, checkpoint: RunCheckpoint) -> None:
        # The parent's checkpoint reads the child's turn from its state (``checkpoint`` is
        # that turn), and its siblings' progress with it.
        await checkpointed(self.parent).turn(self.parent.checkpoint())


__all__ = [
    "TOOL_PREFIX",
    "ChildJournal",
    "ChildLoop",
    "ChildSuspended",
    "Delegation",
    "SubAgent",
    "delegation_tool",
]
