"""A run tree whose worker dies while one child waits for approval: every sibling still
working journals its tool calls and its turns in the top run's journal from the moment the
tree has a checkpoint, so the tree resumed from what was saved never runs a sibling's call
twice (governance.md, "Nothing runs twice").

The worker's part is played as the daemon plays it (``loom/daemon/worker.py`` and
``awaiting.py``): the top run's journal is the durable store, the pause checkpoint is saved
in it before anyone is asked, and a "kill" keeps a copy of the store as it is at that moment
(nothing the dying process does afterwards reaches it). The tree is then resumed from that
copy by another agent, as another worker would."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from loom import Agent, Model, ModelRequest, ModelResponse, RunStatus, ToolCall, tool
from loom.core.checkpoints import MemoryToolJournal, RunCheckpoint
from loom.runtime.run import Run


class Durable(MemoryToolJournal):
    """What the daemon keeps in the state: the journal, and the tree's latest checkpoint
    (its pause, then every turn written after it)."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: RunCheckpoint | None = None

    async def turn(self, checkpoint: RunCheckpoint) -> None:
        await super().turn(checkpoint)
        self.saved = checkpoint

    def killed(self) -> Durable:
        """The store as a kill -9 leaves it."""
        return copy.deepcopy(self)


class Tree:
    """A lead that hands ``restart api`` to a fixer (needs approval) and ``note api`` to a
    scribe (no approval) in one turn; the scribe's ``note`` counts its effect outside any
    state. Events let a test place the kill."""

    def __init__(self, *, note_blocks: bool = False, scribe_first: bool = False) -> None:
        self.restarted: list[str] = []
        self.noted: list[str] = []
        self.note_blocks = note_blocks
        self.scribe_first = scribe_first
        self.go_scribe = asyncio.Event()  # the scribe's first model turn waits for it
        self.go_fixer = asyncio.Event()  # the fixer's first model turn waits for it
        self.release = asyncio.Event()  # the scribe's later model turns wait for it
        self.scribe_waiting = asyncio.Event()
        self.note_started = asyncio.Event()
        self.scribe_turns = 0
        if scribe_first:
            self.go_scribe.set()
        else:
            self.go_fixer.set()

    def agent(self) -> Agent:
        tree = self

        @tool(requires_approval=True)
        def restart(service: str) -> str:
            """Restart a service."""
            tree.restarted.append(service)
            return f"{service} restarted"

        @tool
        async def note(text: str) -> str:
            """Write a note."""
            tree.noted.append(text)
            tree.note_started.set()
            if tree.note_blocks:
                await asyncio.Event().wait()  # the worker dies during this call
            return f"noted {text}"

        async def fixer(request: ModelRequest) -> ModelResponse | str:
            results = [m for m in request.messages if m.role == "tool"]
            if not results:
                await tree.go_fixer.wait()
                return ModelResponse.of_tool_calls(ToolCall("x1", "restart", {"service": "api"}))
            return f"fixer: {results[0].content}"

        async def scribe(request: ModelRequest) -> ModelResponse | str:
            tree.scribe_turns += 1
            results = [m for m in request.messages if m.role == "tool"]
            if not results:
                await tree.go_scribe.wait()
                return ModelResponse.of_tool_calls(ToolCall("n1", "note", {"text": "api"}))
            tree.scribe_waiting.set()
            await tree.release.wait()  # the worker dies during this model call
            return f"scribe: {results[0].content}"

        def lead(request: ModelRequest) -> ModelResponse | str:
            results = [m for m in request.messages if m.role == "tool"]
            if not results:
                return ModelResponse.of_tool_calls(
                    ToolCall("d1", "delegate_to_fixer", {"task": "restart api"}),
                    ToolCall("d2", "delegate_to_scribe", {"task": "note api"}),
                )
            return "lead: " + " + ".join(m.content for m in results)

        fixer_agent = Agent(Model.function(fixer), name="fixer", tools=[restart])
        scribe_agent = Agent(Model.function(scribe), name="scribe", tools=[note])
        return Agent(Model.function(lead), subagents=[fixer_agent, scribe_agent])


async def paused(run: Run, journal: Durable) -> RunCheckpoint:
    """The tree's pause, saved before anyone is asked (the worker's ``_ask``)."""
    result = await asyncio.wait_for(run.wait(), 10)
    assert result.status is RunStatus.AWAITING_APPROVAL
    assert result.checkpoint is not None
    journal.saved = result.checkpoint
    return result.checkpoint


async def kill(run: Run, journal: Durable) -> Durable:
    """Keep the store as it is, then end the dying run's tasks (nothing they write counts)."""
    left = journal.killed()
    run.cancel("killed")
    await asyncio.wait_for(run.wait(), 10)
    return left


async def resume(tree: Tree, left: Durable) -> Any:
    """Another worker: decide the fixer's approval on the saved checkpoint, resume the tree."""
    checkpoint = left.saved
    assert checkpoint is not None
    (approval,) = checkpoint.pending
    checkpoint = checkpoint.with_approval(approval.decide("approve", by="alice"))
    tree.release.set()
    run = tree.agent().session("ops").resume(checkpoint, journal=left)
    return await asyncio.wait_for(run.wait(), 10)


async def test_a_sibling_that_noted_after_the_pause_is_not_run_again() -> None:
    tree = Tree()
    journal = Durable()
    run = tree.agent().session("ops").start("fix and note")
    run.journal = journal
    await paused(run, journal)  # the fixer waits for approval; the scribe has not called yet
    tree.go_scribe.set()
    await asyncio.wait_for(tree.scribe_waiting.wait(), 10)
    assert tree.noted == ["api"]

    result = await resume(tree, await kill(run, journal))

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == "lead: fixer: api restarted + scribe: noted api"
    assert tree.noted == ["api"]  # exactly once
    assert tree.restarted == ["api"]


async def test_a_sibling_killed_inside_its_call_reads_outcome_unknown() -> None:
    tree = Tree(note_blocks=True)
    journal = Durable()
    run = tree.agent().session("ops").start("fix and note")
    run.journal = journal
    await paused(run, journal)
    tree.go_scribe.set()
    await asyncio.wait_for(tree.note_started.wait(), 10)

    tree.note_blocks = False  # were it run again, it would finish (and count again)
    result = await resume(tree, await kill(run, journal))

    assert result.status is RunStatus.COMPLETED, result.error
    assert tree.noted == ["api"]  # not run again
    assert result.output.startswith("lead: fixer: api restarted + scribe: outcome unknown")


async def test_a_sibling_that_noted_before_the_pause_is_not_run_again() -> None:
    tree = Tree(scribe_first=True)
    journal = Durable()
    run = tree.agent().session("ops").start("fix and note")
    run.journal = journal
    await asyncio.wait_for(tree.scribe_waiting.wait(), 10)
    tree.go_fixer.set()
    checkpoint = await paused(run, journal)
    # The scribe's progress (its call done, its next model turn under way) is in the tree's.
    assert set(checkpoint.children) == {"d1", "d2"}
    assert checkpoint.children["d2"].calls == ()
    assert [m.role for m in checkpoint.children["d2"].transcript] == ["user", "assistant", "tool"]

    turns = tree.scribe_turns
    result = await resume(tree, await kill(run, journal))

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == "lead: fixer: api restarted + scribe: noted api"
    assert tree.noted == ["api"]
    assert tree.scribe_turns == turns + 1  # only the turn under way is asked again


@pytest.mark.parametrize("scribe_first", [False, True])
async def test_without_a_kill_the_tree_ends_as_before(scribe_first: bool) -> None:
    tree = Tree(scribe_first=scribe_first)
    run = tree.agent().session("ops").start("fix and note")
    if scribe_first:
        await asyncio.wait_for(tree.scribe_waiting.wait(), 10)
        tree.go_fixer.set()
    result = await asyncio.wait_for(run.wait(), 10)
    assert result.status is RunStatus.AWAITING_APPROVAL
    tree.go_scribe.set()
    tree.release.set()
    run.approve(result.approvals[0].id)
    result = await asyncio.wait_for(run.wait(), 10)
    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == "lead: fixer: api restarted + scribe: noted api"
    assert (tree.noted, tree.restarted) == (["api"], ["api"])


async def test_a_siblings_call_under_way_before_the_pause_reads_outcome_unknown() -> None:
    """The scribe's call began before the tree had a checkpoint (the journal never saw it
    start): the checkpoint names it as under way, and resumed it is not run again."""
    tree = Tree(scribe_first=True, note_blocks=True)
    journal = Durable()
    run = tree.agent().session("ops").start("fix and note")
    run.journal = journal
    await asyncio.wait_for(tree.note_started.wait(), 10)
    tree.go_fixer.set()
    checkpoint = await paused(run, journal)
    assert checkpoint.children["d2"].running == ("n1",)

    tree.note_blocks = False
    result = await resume(tree, await kill(run, journal))

    assert result.status is RunStatus.COMPLETED, result.error
    assert tree.noted == ["api"]
    assert result.output.startswith("lead: fixer: api restarted + scribe: outcome unknown")
