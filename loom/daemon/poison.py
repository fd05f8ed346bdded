"""Giving up on a session whose signals keep failing the worker.

A worker that fails before its run can start (a corrupt pending record, a history the store
cannot load, a bug) leaves the session's signals in flight and tries again at the sweep's
pace. If the same signals fail again and again, they would block the session for good: after
``max_attempts`` failures in a row they go to the dead-letter queue instead (replayable, to
the attention queue, with ``loom dlq replay``), their senders get a failure reply, and the
session takes new signals again. Outages of Redis or RabbitMQ are waited out, not counted:
nothing is wrong with the signals then.
"""

from __future__ import annotations

import logging
import secrets

from loom import metrics
from loom.broker.base import Broker, Message
from loom.daemon.replies import publish_reply, replies_for
from loom.delivery import OUTAGES, PoisonLimit, dead_letter
from loom.runtime.run import RunResult, RunStatus
from loom.state.base import Lease, State
from loom.state.working import recorded_key
from loom.wire import ATTENTION_QUEUE, PendingSignal

logger = logging.getLogger("loom.worker")

FAILURE_MEMORY = 86_400.0
"""Seconds a session's count of failed attempts is kept after the last one."""
__all__ = ["FAILURE_MEMORY", "OUTAGES", "PoisonGuard", "failures_key"]


def failures_key(session_id: str) -> str:
    return f"run-failures:{session_id}"


class PoisonGuard:
    """Counts a session's failed attempts (a ``PoisonLimit``) and gives its in-flight
    signals up at the limit."""

    def __init__(self, broker: Broker, state: State, *, max_attempts: int = 5) -> None:
        self.limit = PoisonLimit(state, max_attempts=max_attempts, memory=FAILURE_MEMORY)
        self.broker = broker
        self.state = state
        self.max_attempts = max_attempts

    async def failed(self, lease: Lease, problem: BaseException) -> bool:
        """Count a failed attempt of the lease's session (under that lease); at the limit,
        give its in-flight signals up. True when they were given up."""
        session_id = lease.session_id
        failures = await self.limit.failed(failures_key(session_id), problem)
        if failures is None:
            return False
        reason = f"session {session_id}: the worker failed {failures} times in a row: {problem}"
        await self.state.check_fence(session_id, lease.token)  # still ours to give up
        await self._give_up(session_id, reason[:1000])
        await self.recovered(session_id)
        return True

    async def recovered(self, session_id: str) -> None:
        """The session's signals went through: its failures start again from zero."""
        await self.limit.recovered(failures_key(session_id))

    async def _give_up(self, session_id: str, reason: str) -> None:
        taken: list[PendingSignal] = []
        for text in await self.state.in_flight(session_id):
            try:
                pending = PendingSignal.from_json(text)
            except (ValueError, KeyError, TypeError):
                # Unreadable (perhaps the very reason): kept as it is, for a person to read.
                await dead_letter(self.broker, Message(text.encode()), ATTENTION_QUEUE, reason)
                continue
            signal = pending.signal
            # A replay of the dead letter is recorded again (the attention role records a
            # signal id once).
            await self.state.forget(recorded_key(signal.id))
            letter = Message(signal.model_dump_json().encode(), message_id=signal.id)
            await dead_letter(self.broker, letter, ATTENTION_QUEUE, reason)
            taken.append(pending)
        # Whoever asked gets an answer that says it failed, rather than silence.
        failure = RunResult(
            f"run_{secrets.token_hex(16)}", session_id, RunStatus.FAILED, error=reason
        )
        for reply in replies_for(failure, taken):
            await publish_reply(self.broker, reply)
        await self.state.finish_in_flight(session_id)
        metrics.POISONED_SESSIONS.inc()
        logger.error("%s; %d signal(s) moved to the dead letters", reason, len(taken))
