"""Session: the history and signals one conversation keeps across runs.

Runs of a session take turns (one at a time, in order of start); sessions share nothing,
so one user's history can never reach another's requests.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from loom import logs
from loom.core.approvals import Approval, ApprovalError, Decision, UnknownApproval
from loom.core.attention import Decider, SessionView
from loom.core.checkpoints import RunCheckpoint, ToolJournal
from loom.core.context import StoredContext, WorkingItem
from loom.core.hooks import HookManager
from loom.core.messages import Message, Usage
from loom.core.session_store import RunRecord, SessionStore
from loom.knowledge.query import render_passages
from loom.runtime.config import RunContext, Runtime, RuntimeTask, SessionConfig
from loom.runtime.context import ContextWindow, DropOldestTurns
from loom.runtime.decisions import SignalDecision, decide_signals
from loom.runtime.events import RunEvent
from loom.runtime.gate import CRITERIA_KEY
from loom.runtime.history import WorkingHistory
from loom.runtime.loop import AgentLoop
from loom.runtime.run import Run, RunResult, RunStatus
from loom.signals import RuntimeSignal, SignalAdapter

logger = logging.getLogger("loom.session")

MAX_PENDING_SIGNALS = 100
MAX_REMEMBERED_DEDUPE_KEYS = 1_000
MAX_RUNS_KEPT = 100
SAVE_RETRY_PAUSES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Pauses between attempts to save a run that ended (about 8 s in all): after the last,
the run is reported failed, saying the session could not be saved."""

Task = str | RuntimeTask
Outcome = tuple[RunResult, list[Message]]


class SessionHost(Protocol):
    """What a session needs of its agent: the loop that runs it, the runtime's limits, the
    hooks, and the attention policy its signals are decided by."""

    @property
    def loop(self) -> AgentLoop: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def hooks(self) -> HookManager: ...

    @property
    def attention(self) -> Decider: ...


def render_task(task: Task, context: RunContext | None) -> str:
    """The user message a task becomes: goal, input and criteria, then the run's inputs."""
    if isinstance(task, RuntimeTask):
        parts = [task.goal]
        if task.input:
            parts.append("Input:\n" + json.dumps(task.input, default=str, ensure_ascii=False))
        if task.criteria:
            parts.append("Criteria:\n" + "\n".join(f"- {c}" for c in task.criteria))
        text = "\n\n".join(parts)
    else:
        text = task
    if context is not None and context.inputs:
        inputs = json.dumps(context.inputs, default=str, ensure_ascii=False)
        text = f"{text}\n\nContext:\n{inputs}"
    return text


class Session:
    """A conversation with the agent. Get one with ``agent.session(SessionConfig(id=...))``."""

    def __init__(
        self, agent: SessionHost, config: SessionConfig, store: SessionStore | None = None
    ) -> None:
        self.agent = agent
        self.id = config.id
        self.metadata = dict(config.metadata)
        self.store = store
        self.usage = Usage()
        self.runs: deque[RunResult] = deque(maxlen=MAX_RUNS_KEPT)
        self.pending_signals: deque[RuntimeSignal] = deque(maxlen=MAX_PENDING_SIGNALS)
        self.current_run: Run | None = None
        self._history: WorkingHistory | None = None
        self._first_entry = 0  # the session-wide number of the history's first message
        self._stored = StoredContext()
        self._lock = asyncio.Lock()
        self._queued = 0
        self._dedupe: OrderedDict[str, None] = OrderedDict()
        self._ledger = _SessionLedger(self)

    @property
    def busy(self) -> bool:
        return self.current_run is not None or self._queued > 0

    @property
    def history(self) -> tuple[Message, ...]:
        """The working history the next run will see (empty until the first run loads it)."""
        return tuple(self._history.messages) if self._history is not None else ()

    # -- runs --------------------------------------------------------------------------
    def start(
        self,
        task: Task,
        *,
        context: RunContext | None = None,
        signal: RuntimeSignal | None = None,
        stream: bool = False,
    ) -> Run:
        """Start a run now; it waits its turn behind this session's earlier runs. With
        ``stream`` its model calls stream, and their text comes as ``model.token`` events."""
        text = render_task(task, context)
        metadata = dict(context.metadata) if context is not None else {}
        if isinstance(task, RuntimeTask) and task.metadata:
            metadata = {**task.metadata, **metadata}
        if isinstance(task, RuntimeTask) and task.criteria:
            metadata[CRITERIA_KEY] = list(task.criteria)  # judged by the quality gate
        run = Run(f"run_{secrets.token_hex(16)}", self.id, max_events=self.agent.runtime.max_events)
        run.streamed = stream
        working: list[str | WorkingItem] = []
        if context is not None:
            if context.knowledge:
                working.append(render_passages(context.knowledge))
            working.extend(context.working)
        return self._launch(run, lambda window: self.agent.loop.execute(
            run,
            window.history,
            Message.user(self._with_pending_signals(text)),
            metadata=metadata,
            window=window,
        ), working)  # fmt: skip

    def resume(self, checkpoint: RunCheckpoint, *, journal: ToolJournal | None = None) -> Run:
        """Go on with a run suspended while it waited for approvals (same run id), from its
        checkpoint: the decided calls run, each at most once through ``journal``."""
        if checkpoint.session_id != self.id:
            raise ValueError(
                f"checkpoint of session {checkpoint.session_id!r} resumed in session {self.id!r}"
            )
        run = Run(checkpoint.run_id, self.id, max_events=self.agent.runtime.max_events)
        run.journal = journal
        run.checkpointed = True
        return self._launch(
            run,
            lambda window: self.agent.loop.resume(run, window.history, checkpoint, window=window),
        )

    def _launch(
        self,
        run: Run,
        body: Callable[[ContextWindow], Awaitable[Outcome]],
        working: Sequence[str | WorkingItem] = (),
    ) -> Run:
        self._queued += 1
        # The run's task logs with its own run and session ids, whoever started it.
        ids = contextvars.copy_context()
        ids.run(logs.bind, run_id=run.id, session_id=self.id)
        run.attach(
            asyncio.get_running_loop().create_task(self._execute(run, body, working), context=ids)
        )
        return run

    def approve(
        self, approval_id: str, message: str | None = None, *, by: str | None = None
    ) -> Approval:
        """Approve a call the session's current run waits for (see ``Run.approve``)."""
        return self._waiting_run(approval_id).approve(approval_id, message, by=by)

    def deny(
        self, approval_id: str, message: str | None = None, *, by: str | None = None
    ) -> Approval:
        """Deny a call the session's current run waits for (see ``Run.deny``)."""
        return self._waiting_run(approval_id).deny(approval_id, message, by=by)

    @property
    def approvals(self) -> tuple[Approval, ...]:
        """The approvals the session's current run waits for."""
        return self.current_run.approvals if self.current_run is not None else ()

    def take_decision(self, signal: RuntimeSignal) -> Approval | None:
        """Apply the decision an ``approval`` signal carries (``approval_id``, ``decision``,
        and optionally ``message``, ``digest``, ``by`` in its payload) to the run waiting for
        it; a decision that cannot be taken is logged and ignored."""
        payload = signal.payload
        try:
            approval_id = str(payload["approval_id"])
            return self._waiting_run(approval_id).decide(
                approval_id,
                Decision(payload["decision"]),
                message=payload.get("message"),
                digest=payload.get("digest"),
                by=payload.get("by"),
            )
        except (KeyError, ValueError, ApprovalError) as problem:
            logger.warning(
                "session %s: approval signal %s ignored: %s", self.id, signal.id, problem
            )
            return None

    def _waiting_run(self, approval_id: str) -> Run:
        run = self.current_run
        if run is None or not run.knows(approval_id):
            raise UnknownApproval(f"session {self.id} waits for no approval {approval_id!r}")
        return run

    async def run(self, task: Task, *, context: RunContext | None = None) -> RunResult:
        return await self.start(task, context=context).wait()

    async def stream(
        self, task: Task, *, context: RunContext | None = None
    ) -> AsyncIterator[RunEvent]:
        """Like ``run`` but yields the run's events as they happen, the model's text as
        ``model.token`` events (the provider is asked for a streamed response)."""
        run = self.start(task, context=context, stream=True)
        async for event in run.events():
            yield event

    async def _execute(
        self,
        run: Run,
        body: Callable[[ContextWindow], Awaitable[Outcome]],
        working: Sequence[str | WorkingItem] = (),
    ) -> None:
        loop = self.agent.loop
        waiting = True
        try:
            if run.cancel_reason is not None:  # cancelled before its task took a step
                raise asyncio.CancelledError
            async with self._lock:
                self._queued -= 1
                waiting = False
                if run.cancel_reason is not None:  # cancelled while waiting its turn
                    raise asyncio.CancelledError
                window = self._window(await self._working_history(), working)
                self.current_run = run
                try:
                    result, transcript = await body(window)
                finally:
                    self.current_run = None
                if result.status is not RunStatus.AWAITING_APPROVAL:  # suspended: not ended
                    # What this run saw (restored, compacted) is what the next one starts from.
                    window.history.extend(transcript)
                    self._history, self._first_entry = window.history, window.first_entry
                    await self._record(result, transcript)
                    if self.store is not None and result.ok:
                        await self._remember_calibration(window)
        except asyncio.CancelledError:
            if waiting:
                self._queued -= 1
            result = RunResult(
                run.id,
                self.id,
                RunStatus.CANCELLED,
                error=run.cancel_reason or "run task cancelled (shutdown)",
            )
            await loop.conclude(run, result)
            if run.cancel_reason is None:
                raise
            return
        except Exception as exc:  # a bug, not a run outcome: still end the run honestly
            logger.exception("run %s of session %s crashed", run.id, self.id)
            error = f"internal error: {type(exc).__name__}: {exc}"
            result = RunResult(run.id, self.id, RunStatus.FAILED, error=error)
        await loop.conclude(run, result)

    async def _remember_calibration(self, window: ContextWindow) -> None:
        """Keep what this run learnt of the model's tokens per character, best effort: the
        run is over and recorded, and nothing here may turn its outcome into a failure (a
        store that is away only costs the next run its estimate)."""
        try:
            await window.remember_calibration()
        except Exception as problem:
            logger.warning("session %s: calibration not kept: %s", self.id, problem)

    async def _working_history(self) -> WorkingHistory:
        if self._history is None:
            snapshot = await self.store.load_history(self.id) if self.store is not None else None
            self._history = WorkingHistory(snapshot.messages if snapshot else ())
            if snapshot is not None:
                self.metadata = {**snapshot.metadata, **self.metadata}
                self._first_entry = snapshot.first_entry
                self._stored = snapshot.context or StoredContext()
        return self._history

    def _window(
        self, history: WorkingHistory, working: Sequence[str | WorkingItem]
    ) -> ContextWindow:
        """This run's context: the restore policy applied to the history, then the window."""
        runtime = self.agent.runtime
        messages, use_summary, items = history.messages, True, None
        if runtime.session_restore is not None:
            restored = runtime.session_restore.restore(messages)
            messages, use_summary, items = (
                restored.messages,
                restored.summary,
                restored.runtime_items,
            )
        return ContextWindow(
            runtime.context or DropOldestTurns(runtime.max_context_tokens),
            history.copy() if messages is history.messages else WorkingHistory(messages),
            first_entry=self._first_entry + len(history.messages) - len(messages),
            stored=self._stored,
            use_summary=use_summary,
            working=working,
            runtime_items=items,
            continuity=runtime.continuity,
            save=self._save_context if self.store is not None else None,
        )

    async def _save_context(self, context: StoredContext) -> None:
        assert self.store is not None
        await self.store.save_context(self.id, context)

    @property
    def stored_context(self) -> StoredContext:
        """The session's stored summary, handoff and calibration (as this process knows it)."""
        return self._stored.copy()

    async def _record(self, result: RunResult, transcript: list[Message]) -> None:
        self.usage.add(result.usage)
        self.runs.append(result)
        if self.store is None:
            return
        record = RunRecord(
            run_id=result.run_id,
            session_id=self.id,
            status=result.status.value,
            output=result.output,
            error=result.error,
            usage=result.usage.to_dict(),
            started_at=result.started_at or result.finished_at,  # type: ignore[arg-type]
            finished_at=result.finished_at,
            metadata=result.metadata,
        )
        # The model has answered: a store that is briefly away (a failover) is waited out
        # rather than the answer thrown away as a failed run.
        for pause in (*SAVE_RETRY_PAUSES, None):
            try:
                await self.store.append(
                    self.id, messages=transcript, run=record, metadata=self.metadata
                )
                return
            except Exception as exc:
                if pause is None:
                    logger.exception("saving session %s failed", self.id)
                    result.status = RunStatus.FAILED
                    result.error = f"the run ended but saving the session failed: {exc}"
                    result.artifacts = ()  # only completed runs have artifacts
                    return
                logger.warning(
                    "saving session %s failed (%s); retrying in %.2fs", self.id, exc, pause
                )
                await asyncio.sleep(pause)

    # -- signals -----------------------------------------------------------------------
    def _with_pending_signals(self, text: str) -> str:
        if not self.pending_signals:
            return text
        observed = "\n".join(f"- {s.describe()}" for s in self.pending_signals)
        self.pending_signals.clear()
        return f"Signals observed since the last run:\n{observed}\n\n{text}"

    def view(self) -> SessionView:
        return SessionView(
            session_id=self.id, busy=self.busy, pending_signals=len(self.pending_signals)
        )

    async def receive(
        self,
        event: RuntimeSignal | Mapping[str, Any],
        *,
        adapter: SignalAdapter | None = None,
    ) -> SignalDecision:
        """Let the attention policy decide what a signal deserves, and act on it."""
        signal = _to_signal(event, adapter, session_id=self.id)
        agent = self.agent
        (decision,) = await decide_signals([signal], agent.attention, self._ledger, agent.hooks)
        return decision

    def __repr__(self) -> str:
        return f"<Session {self.id} runs={len(self.runs)} busy={self.busy}>"


def _to_signal(
    event: RuntimeSignal | Mapping[str, Any], adapter: SignalAdapter | None, *, session_id: str
) -> RuntimeSignal:
    """The event as a signal of the session that received it, whatever session it named:
    that session decides on it, keeps it and runs for it."""
    if isinstance(event, RuntimeSignal):
        if event.session_id == session_id:
            return event
        return event.model_copy(update={"session_id": session_id})
    if adapter is not None:
        return adapter.adapt(event, session_id=session_id)
    return RuntimeSignal.model_validate({**event, "session_id": session_id})


class _SessionLedger:
    """The decision step's ledger in one process: the session's own memory. Dedupe keys
    are remembered per session (bounded); waking the session starts a run in it."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def claim(self, signals: Sequence[RuntimeSignal]) -> list[bool]:
        seen = self.session._dedupe
        duplicates = []
        for signal in signals:
            key = signal.dedupe_key
            duplicates.append(key is not None and key in seen)
            if key is not None and key not in seen:
                seen[key] = None
                if len(seen) > MAX_REMEMBERED_DEDUPE_KEYS:
                    seen.popitem(last=False)
        return duplicates

    async def views(self, session_ids: Sequence[str]) -> dict[str, SessionView]:
        return {self.session.id: self.session.view()}

    async def record(self, decisions: Sequence[SignalDecision]) -> None:
        # A signal that wakes the session is the task of the run it starts; one kept
        # without waking it waits in the working state for whichever run comes next.
        pending = self.session.pending_signals
        for decision in decisions:
            traits = decision.action.traits
            if traits.keeps_signal and not traits.wakes_a_worker:
                if len(pending) == pending.maxlen:
                    logger.warning(
                        "session %s: pending signals full, oldest dropped", self.session.id
                    )
                pending.append(decision.signal)

    async def wake(self, decisions: Sequence[SignalDecision]) -> list[SignalDecision]:
        session, woken = self.session, []
        for decision in decisions:
            signal = decision.signal
            if decision.action.resumes:
                session.take_decision(signal)
            elif decision.action.wakes_a_worker:
                if decision.action.interrupts and session.current_run is not None:
                    session.current_run.interrupt(f"interrupted by signal {signal.id}")
                context = RunContext(metadata={"signal": signal.id})
                decision = decision.with_run(session.start(signal.describe(), context=context))
            woken.append(decision)
        return woken
