"""The attention consumer: validate, dedupe, decide, record, and ask for a run.

A message that is not a valid signal is dead-lettered with the reason at once (retrying
cannot fix it); an outage of Redis or RabbitMQ is waited out in place (``backoff``); any
other failure is retried by the broker and dead-lettered past the delivery limit. Either way
the consumer keeps consuming.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Sequence

from pydantic import ValidationError

from loom import metrics, tracing
from loom.broker.base import Broker, Delivery
from loom.core.attention import Action, Decider, Scheduler
from loom.core.hooks import HookManager
from loom.daemon.ledger import StateLedger, pending_json
from loom.delivery import backoff, count_dead_letters
from loom.errors import validation_details
from loom.logs import log_context
from loom.policies.feedback import FeedbackPolicy
from loom.runtime.decisions import SignalDecision, decide_signals
from loom.signals import RuntimeSignal
from loom.state.base import State, StateUnavailable
from loom.wire import ATTENTION_QUEUE

logger = logging.getLogger("loom.attention")

LINGER_STEP = 0.001
"""The event loop's timer resolution on Linux (epoll waits in whole milliseconds)."""


def describe_validation_error(error: ValidationError) -> str:
    return f"invalid signal: {validation_details(error)}"


class AttentionConsumer:
    """Consumes ``loom.attention`` and applies the AttentionPolicy to every signal."""

    def __init__(
        self,
        broker: Broker,
        state: State,
        policy: Decider,
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
        self._batch: list[tuple[RuntimeSignal, dict[str, str], asyncio.Future[Action]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.max_batch = 256
        self.max_linger = 0.005
        """How long, at most, a batch waits to grow while the role is under load."""
        self._saturated = False

    @property
    def consuming(self) -> bool:
        return self._tag is not None

    async def start(self, prefetch: int = 64) -> None:
        # Redis or RabbitMQ away (a failover): the backoff waits it out in place, so no
        # delivery of the delivery limit is spent on it.
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

    async def _in_batch(self, signal: RuntimeSignal, trace: dict[str, str]) -> Action:
        """Decide together with the other signals delivered in the same loop turn.

        Deliveries arrive concurrently (up to the prefetch); deciding them as one batch
        reads every session in one round trip and writes every decision in one transaction.
        """
        done: asyncio.Future[Action] = asyncio.get_running_loop().create_future()
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

    async def decide(self, signal: RuntimeSignal) -> Action:
        """Decide on one signal and apply the decision; returns the action."""
        return (await self.decide_many([signal]))[0]

    async def decide_many(
        self, signals: list[RuntimeSignal], *, traces: Sequence[dict[str, str]] | None = None
    ) -> list[Action]:
        """Dedupe, decide and apply a batch of signals; returns each signal's action.

        ``traces`` are the signals' trace contexts, kept with the pending signals."""
        ledger = StateLedger(
            self.state,
            self.state,
            self.broker,
            dedupe_ttl=self.dedupe_ttl,
            traces=dict(zip((s.id for s in signals), traces or (), strict=False)),
            grouping=self.policy
            if isinstance(self.policy, Scheduler) and self.policy.reads_groups
            else None,
        )
        signals = [
            s if s.session_id else s.model_copy(update={"session_id": self.default_session})
            for s in signals
        ]
        decisions = await decide_signals(signals, self.policy, ledger, self.hooks)
        self._count(decisions)
        for decision in decisions:
            await self._announce(decision)
        return [decision.action for decision in decisions]

    @staticmethod
    def _count(decisions: list[SignalDecision]) -> None:
        for decision in decisions:
            metrics.signal_received(decision.signal.source, decision.signal.type)
            metrics.decided(decision.action)
            if decision.duplicate:
                metrics.DEDUPE_HITS.inc()

    async def _announce(self, decision: SignalDecision) -> None:
        """Log the decision and record the feedback it carries."""
        signal, action, reason = decision.signal, decision.action, decision.reason
        # This may run in the batch's task: name each signal's ids on its own records.
        with log_context(signal_id=signal.id, session_id=signal.session_id, run_id=None):
            logger.info(
                "signal %s (%s/%s, %s) for session %s: %s (%s)",
                signal.id, signal.source, signal.type, signal.urgency, signal.session_id,
                action.value, reason,
            )  # fmt: skip
            if not decision.duplicate:
                await self._record_feedback(signal)

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


__all__ = ["AttentionConsumer", "describe_validation_error", "pending_json"]
