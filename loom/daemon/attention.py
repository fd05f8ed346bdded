"""The attention consumer: validate, dedupe, decide, record, and ask for a run.

A message that is not a valid signal is dead-lettered with the reason at once (retrying
cannot fix it); any other failure is retried by the broker and dead-lettered past the
delivery limit. Either way the consumer keeps consuming.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from loom import metrics, tracing
from loom.broker.base import Broker, Delivery
from loom.delivery import backoff, count_dead_letters
from loom.errors import validation_details
from loom.logs import log_context
from loom.policies.attention import AttentionPolicy, SessionView
from loom.policies.feedback import FeedbackPolicy
from loom.runtime.hooks import HookManager
from loom.signals import RuntimeSignal
from loom.state.base import SignalRecord, State, StateUnavailable
from loom.wire import ATTENTION_QUEUE, PendingSignal, decision_record, publish_work

logger = logging.getLogger("loom.attention")

RISK_URGENCIES = frozenset({"high", "critical"})
LINGER_STEP = 0.001
"""The event loop's timer resolution on Linux (epoll waits in whole milliseconds)."""


def pending_json(signal: RuntimeSignal, action: str, trace: dict[str, str] | None = None) -> str:
    return PendingSignal(signal, action, trace).to_json()


def describe_validation_error(error: ValidationError) -> str:
    return f"invalid signal: {validation_details(error)}"


@dataclass(frozen=True, slots=True)
class Decided:
    """One signal of a batch with what attention decided for it."""

    signal: RuntimeSignal
    action: str
    reason: str
    duplicate: bool
    trace: dict[str, str] | None

    @property
    def wakes_a_worker(self) -> bool:
        return self.action in ("queue", "interrupt")

    def record(self) -> SignalRecord:
        # The signal is pending before the interrupt is requested: a run that takes the
        # pending list then already holds the signal and ignores the request.
        action = self.action
        return SignalRecord(
            str(self.signal.session_id),
            decision_record(self.signal, action, self.reason),
            pending_json=None
            if action == "drop"
            else pending_json(self.signal, action, self.trace),
            interrupt=(self.signal.id, self.reason) if action == "interrupt" else None,
            ready=self.wakes_a_worker,
        )


class AttentionConsumer:
    """Consumes ``loom.attention`` and applies the AttentionPolicy to every signal."""

    def __init__(
        self,
        broker: Broker,
        state: State,
        policy: AttentionPolicy,
        *,
        hooks: HookManager | None = None,
        dedupe_ttl: float = 86_400.0,
        default_session: str = "default",
        feedback: FeedbackPolicy | None = None,
    ) -> None:
        self.broker = broker
        self.state = state
        self.policy = policy
        self.hooks = hooks or HookManager()
        self.dedupe_ttl = dedupe_ttl
        self.default_session = default_session
        self.feedback = feedback
        """Records the explicit feedback some signals carry (Slack thumbs on a reply)."""
        self._tag: str | None = None
        self._batch: list[tuple[RuntimeSignal, dict[str, str], asyncio.Future[str]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.max_batch = 256
        self.max_linger = 0.005
        """How long, at most, a batch waits to grow while the role is under load."""
        self._saturated = False

    @property
    def consuming(self) -> bool:
        return self._tag is not None

    async def start(self, prefetch: int = 64) -> None:
        # Redis or RabbitMQ briefly away (a failover): the backoff waits before the
        # redelivery, so the delivery limit is not spent in milliseconds.
        handler = count_dead_letters(backoff(self.handle))
        self._tag = await self.broker.consume(ATTENTION_QUEUE, handler, prefetch=prefetch)
        metrics.CONSUMERS.labels(ATTENTION_QUEUE).inc()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop consuming; decisions under way get ``timeout`` seconds to finish."""
        if self._tag is not None:
            tag, self._tag = self._tag, None
            metrics.CONSUMERS.labels(ATTENTION_QUEUE).dec()
            await self.broker.cancel(tag, timeout=timeout)

    async def handle(self, delivery: Delivery) -> None:
        try:
            signal = RuntimeSignal.model_validate_json(delivery.body)
        except ValidationError as error:
            reason = describe_validation_error(error)
            logger.warning("dead-lettering message %s: %s", delivery.message.message_id, reason)
            await delivery.dead_letter(reason)  # counted by count_dead_letters (DEAD_LETTERS)
            return
        session_id = signal.session_id or self.default_session
        attributes = {"loom.signal_id": signal.id, "loom.session_id": session_id,
                      "loom.source": signal.source, "loom.type": signal.type,
                      "loom.urgency": signal.urgency}  # fmt: skip
        with tracing.span(
            "loom.attention.decide",
            kind="consumer",
            parent=tracing.text_carrier(delivery.headers),
            attributes=attributes,
        ) as span:
            action = await self._in_batch(signal, tracing.carrier())
            span.set_attribute("loom.decision", action)
        await delivery.ack()

    async def _in_batch(self, signal: RuntimeSignal, trace: dict[str, str]) -> str:
        """Decide together with the other signals delivered in the same loop turn.

        Deliveries arrive concurrently (up to the prefetch); deciding them as one batch
        reads every session in one round trip and writes every decision in one transaction.
        """
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._batch.append((signal, trace, done))
        if self._flusher is None or self._flusher.done():
            # A context of its own: the batch decides for several deliveries, so it must not
            # inherit the ids and trace span of the one that happened to start it.
            self._flusher = asyncio.create_task(
                self._flush(), name="loom-attention-batch", context=contextvars.Context()
            )
        return await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the deliveries already under way join this batch
        while self._batch:
            if self._saturated:
                await self._linger()
            batch, self._batch = self._batch[: self.max_batch], self._batch[self.max_batch :]
            try:
                actions = await self.decide_many(
                    [signal for signal, _, _ in batch], traces=[trace for _, trace, _ in batch]
                )
            except BaseException as problem:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(problem)
                if isinstance(problem, asyncio.CancelledError):
                    raise
            else:
                for (_, _, done), action in zip(batch, actions, strict=True):
                    if not done.done():
                        done.set_result(action)
            # Signals that came in while this batch was being decided mean the role is
            # under load: the next batch may wait a little to grow.
            self._saturated = bool(self._batch)

    async def _linger(self) -> None:
        """Under load, let the batch grow: wait a step at a time while signals keep coming,
        at most ``max_linger`` seconds. Each batch costs Redis one round trip whatever its
        size, so under load this is cheaper per signal (group commit); an idle role never
        waits, so a lone signal is decided at once."""
        waited, size = 0.0, len(self._batch)
        while waited < self.max_linger and size < self.max_batch:
            await asyncio.sleep(LINGER_STEP)
            waited += LINGER_STEP
            if len(self._batch) == size:  # the burst is over
                return
            size = len(self._batch)

    async def decide(self, signal: RuntimeSignal) -> str:
        """Decide on one signal and apply the decision; returns the action."""
        return (await self.decide_many([signal]))[0]

    async def decide_many(
        self, signals: list[RuntimeSignal], *, traces: Sequence[dict[str, str]] | None = None
    ) -> list[str]:
        """Dedupe, decide and apply a batch of signals; returns each signal's action.

        ``traces`` are the signals' trace contexts, kept with the pending signals."""
        trace_of = dict(zip((s.id for s in signals), traces or (), strict=False))
        signals = [
            s if s.session_id else s.model_copy(update={"session_id": self.default_session})
            for s in signals
        ]
        duplicates = await self._duplicates(signals)
        views = await self._views(
            [s for s, dup in zip(signals, duplicates, strict=True) if not dup]
        )
        decided: list[Decided] = []
        for signal, dup in zip(signals, duplicates, strict=True):
            session_id = str(signal.session_id)
            if dup:
                action, reason = "drop", f"duplicate dedupe_key {signal.dedupe_key!r}"
            else:
                if self.hooks.wants("signal_received"):
                    with log_context(signal_id=signal.id, session_id=session_id, run_id=None):
                        await self.hooks.emit(
                            "signal_received", session_id=session_id, signal=signal
                        )
                view = views.get(session_id) or SessionView(session_id)
                action, reason = self.policy.decide(signal, view)
                await self._track_risk(signal, session_id)
            decided.append(Decided(signal, action, reason, dup, trace_of.get(signal.id)))
        await self.state.record_signals([item.record() for item in decided])
        wake = dict.fromkeys(str(d.signal.session_id) for d in decided if d.wakes_a_worker)
        await asyncio.gather(*(publish_work(self.broker, session_id) for session_id in wake))
        self._count(decided)
        for item in decided:
            await self._announce(item)
        return [item.action for item in decided]

    async def _duplicates(self, signals: list[RuntimeSignal]) -> list[bool]:
        """Claim each dedupe key for its signal; True where another signal holds it."""
        holders = iter(
            await self.state.claim_many(
                [(f"signal:{s.dedupe_key}", s.id, self.dedupe_ttl) for s in signals if s.dedupe_key]
            )
        )
        duplicates = []
        for signal in signals:
            held = next(holders) if signal.dedupe_key else None
            # A key held by this very signal means a redelivery after a crash: decide again.
            duplicates.append(held is not None and held != signal.id)
        return duplicates

    async def _views(self, signals: list[RuntimeSignal]) -> dict[str, SessionView]:
        """The sessions' state for the policy, read in one round trip, and only for a
        policy that looks at it (the urgency map and rules on the signal alone do not):
        then a batch costs Redis one script, not two."""
        if not self.policy.reads_session:
            return {}
        contexts = await self.state.decision_contexts([str(s.session_id) for s in signals])
        return {
            session_id: SessionView(
                session_id=session_id,
                busy=context.busy,
                pending_signals=context.pending,
                active_risks=tuple(context.risks.values()),
            )
            for session_id, context in contexts.items()
        }

    @staticmethod
    def _count(decided: list[Decided]) -> None:
        for item in decided:
            metrics.signal_received(item.signal.source, item.signal.type)
            metrics.decided(item.action)
            if item.duplicate:
                metrics.DEDUPE_HITS.inc()

    async def _announce(self, item: Decided) -> None:
        """Log the decision, record the feedback it carries, and tell the hooks."""
        signal, action, reason = item.signal, item.action, item.reason
        # This may run in the batch's task: name each signal's ids on its own records.
        with log_context(signal_id=signal.id, session_id=signal.session_id, run_id=None):
            logger.info(
                "signal %s (%s/%s, %s) for session %s: %s (%s)",
                signal.id, signal.source, signal.type, signal.urgency, signal.session_id,
                action, reason,
            )  # fmt: skip
            if not item.duplicate:
                await self._record_feedback(signal)
            if self.hooks.wants("signal_decided"):
                await self.hooks.emit(
                    "signal_decided", session_id=signal.session_id, signal=signal,
                    action=action, reason=reason,
                )  # fmt: skip

    async def _record_feedback(self, signal: RuntimeSignal) -> None:
        """A signal that carries feedback (a thumb on a reply) also becomes a feedback event;
        the signal itself was decided like any other."""
        event = self.feedback.from_signal(signal) if self.feedback is not None else None
        if event is None or self.feedback is None:
            return
        try:
            await self.feedback.record(event)
        except StateUnavailable as problem:
            # The decision is recorded already; a redelivery would decide the signal twice.
            logger.warning("feedback of signal %s not recorded: %s", signal.id, problem)

    async def _track_risk(self, signal: RuntimeSignal, session_id: str) -> None:
        """High and critical signals become active risks until a resolving signal clears them.

        The risk's key is ``payload.risk_key``, else the dedupe key, else the signal id; a
        signal with ``payload.status == "resolved"`` clears the risk with its key.
        """
        key = str(signal.payload.get("risk_key") or signal.dedupe_key or signal.id)
        if signal.payload.get("status") == "resolved":
            await self.state.clear_risk(session_id, key)
        elif signal.urgency in RISK_URGENCIES:
            await self.state.set_risk(session_id, key, signal.describe()[:1000])
