"""What a run carries between its steps, in one process (``RunState``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from loom.core.approvals import Approval
from loom.core.checkpoints import RunCheckpoint, ToolJournal
from loom.core.messages import Message, ToolCall, Usage
from loom.core.quality import QualityVerdict
from loom.runtime.context import ContextWindow
from loom.runtime.history import WorkingHistory, message_chars
from loom.runtime.run import Run


@dataclass(slots=True)
class RunState:
    run: Run
    history: WorkingHistory
    transcript: list[Message]
    metadata: dict[str, Any]
    started_at: datetime
    usage: Usage = field(default_factory=Usage)
    transcript_chars: int = 0
    output: str = ""
    iteration: int = 0
    open_calls: tuple[ToolCall, ...] = ()
    """The last model turn's calls, until each has its result in the transcript."""
    results: dict[str, Message] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    arguments: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Arguments a ``before_tool`` hook rewrote, by call id (the call runs with these)."""
    approvals: dict[str, Approval] = field(default_factory=dict)
    """This turn's approvals, by call id."""
    past_approvals: list[Approval] = field(default_factory=list)
    """Earlier turns' approvals, decided: kept in every checkpoint, so a late decision on
    one is answered with what happened to it."""
    journal: ToolJournal | None = None
    """Set once the run has a checkpoint: from then on every call is journaled."""
    worked: float = 0.0
    """Seconds worked in earlier stretches (other processes, before a suspension)."""
    clock: float = field(default_factory=time.perf_counter)
    waited: float = 0.0
    """Seconds of this stretch spent waiting for people (not counted as work)."""
    deadline: asyncio.Timeout | None = None
    """The run's timeout, stopped while it waits for people."""
    window: ContextWindow | None = None
    """What the run's requests are rendered from (partitions, budgets, compaction)."""
    last_request_chars: int = 0
    input_tokens_seen: int = 0
    quality: QualityVerdict | None = None
    """The quality gate's latest verdict (the last sprint's)."""
    children: dict[str, RunCheckpoint] = field(default_factory=dict)
    """Sub-agents' runs of this turn that paused or were suspended, by delegation call id:
    their checkpoints go into the run's (a run tree is suspended whole)."""
    working: dict[str, Run] = field(default_factory=dict)
    """Sub-agents' runs of this turn going on now, by delegation call id: once the tree
    has a checkpoint, where each has got to goes into the run's (``resume_point``)."""
    running: set[str] = field(default_factory=set)
    """Calls a checkpoint found under way (``RunCheckpoint.running``): resumed, each is
    taken as journaled started."""
    reviewed: bool = False
    """The open turn's calls are decided (reviewed, approvals asked): it can be resumed
    as it is. While it is reviewed, a resume point goes back to the turn before it."""
    settled: int = 0
    """The last model turn whose calls all have their results in the transcript."""
    settled_length: int = 0
    """The transcript's length at that point: a run resumed from there asks the model for
    turn ``settled + 1``."""

    def settle(self) -> None:
        """The transcript is whole up to here (a turn closed, the input or a sprint's
        feedback given): the next model call is the one to ask again if the run is
        resumed before its turn is decided."""
        self.settled, self.settled_length = self.iteration, len(self.transcript)

    def append(self, message: Message) -> None:
        self.transcript.append(message)
        self.transcript_chars += message_chars(message)

    def elapsed(self) -> float:
        """Seconds the run has worked, waits for people excluded."""
        return self.worked + time.perf_counter() - self.clock - self.waited

    def arguments_of(self, call: ToolCall) -> dict[str, Any]:
        return self.arguments.get(call.id, call.arguments)

    def known_approvals(self) -> dict[str, Approval]:
        """Every approval of the run and of its suspended children, by id."""
        known = {a.id: a for c in self.children.values() for a in c.approvals}
        known.update((a.id, a) for a in (*self.past_approvals, *self.approvals.values()))
        return known

    def checkpoint(self) -> RunCheckpoint:
        own = (*self.past_approvals, *self.approvals.values())
        ids = {a.id for a in own}
        children = self.children_checkpoints()
        # A suspended child's approvals are listed with the run's own: decisions on them
        # are taken on the top run's checkpoint, and passed down when the tree resumes.
        inherited = tuple(a for c in children.values() for a in c.approvals if a.id not in ids)
        return RunCheckpoint(
            run_id=self.run.id,
            session_id=self.run.session_id,
            input=self.run.input,
            iteration=self.iteration,
            transcript=tuple(self.transcript),
            calls=tuple(
                ToolCall(c.id, c.name, self.arguments_of(c), c.raw_arguments)
                for c in self.open_calls
            ),
            results=dict(self.results),
            approvals=(*own, *inherited),
            usage=self.usage,
            output=self.output,
            metadata=self.metadata,
            started_at=self.started_at,
            elapsed=self.elapsed(),
            children=children,
            running=tuple(
                sorted((self.started | self.running) - self.results.keys() - children.keys())
            ),
        )

    def children_checkpoints(self) -> dict[str, RunCheckpoint]:
        """The children's checkpoints, by delegation call id: a suspended child's, and
        where each child still working has got to, if it journals (its tree has a
        checkpoint; before that, what it did is not known to the journal either)."""
        children = dict(self.children)
        for call_id, child in self.working.items():
            state = child.state
            if state is not None and state.journal is not None:
                children[call_id] = state.resume_point()
        return children

    def resume_point(self) -> RunCheckpoint:
        """Where a run still working can be resumed from, wherever it has got to: its open
        turn once decided (the journal knows its calls and their results), else the last
        settled turn, the model asked again for the turn under way (its answer not acted
        on yet)."""
        if self.open_calls and self.reviewed:
            return self.checkpoint()
        current = self.checkpoint()
        own = {a.id for a in self.approvals.values()}
        return replace(
            current,
            iteration=self.settled,
            transcript=current.transcript[: self.settled_length],
            calls=(),
            results={},
            approvals=tuple(a for a in current.approvals if a.id not in own),
            running=(),
        )

    @classmethod
    def from_checkpoint(
        cls, run: Run, history: WorkingHistory, checkpoint: RunCheckpoint
    ) -> RunState:
        state = cls(
            run=run,
            history=history,
            transcript=[],
            metadata=dict(checkpoint.metadata),
            started_at=checkpoint.started_at or datetime.now().astimezone(),
            usage=checkpoint.usage,
            output=checkpoint.output,
            iteration=checkpoint.iteration,
            open_calls=checkpoint.calls,
            results=dict(checkpoint.results),
            worked=checkpoint.elapsed,
            children=dict(checkpoint.children),
            running=set(checkpoint.running),
        )
        turn = {call.id for call in checkpoint.calls}
        for approval in checkpoint.approvals:
            # A child's approval (another run id) may share a call id with this turn's.
            if approval.call_id in turn and approval.run_id == checkpoint.run_id:
                state.approvals[approval.call_id] = approval
            else:
                state.past_approvals.append(approval)
        for message in checkpoint.transcript:
            state.append(message)
        state.settle()
        if checkpoint.calls:  # a checkpointed turn is decided; the one before it settled
            state.reviewed = True
            state.settled, state.settled_length = state.iteration - 1, len(state.transcript) - 1
        return state


__all__ = ["RunState"]
