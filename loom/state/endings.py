"""A run's ending, stored in one fenced, idempotent step: the ``RunEndings`` port.

When a leased run has ended, its worker stores, all or nothing: the transcript and the run
record, the replies its signals are owed (in the session's outbox) and the release of those
signals from the in-flight list. The step is fenced by the lease's token (a worker that lost
its lease stores nothing) and keyed by the run id (a retry after a timeout whose write
landed anyway stores nothing twice). The replies then leave the outbox for the broker under
run-derived message ids, and are dropped from it once published; a worker killed between
the two leaves them for whichever worker takes the session next, which publishes them
first. So a retry or a kill at any point neither loses the answer nor runs or replies twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from loom.core.messages import Message
from loom.core.session_store import RunRecord
from loom.state.leases import Lease


@dataclass(frozen=True, slots=True)
class RunEnding:
    """What one run leaves behind: its record, the messages and metadata it adds to the
    session, and the replies (JSON) its signals are owed."""

    session_id: str
    run: RunRecord
    messages: Sequence[Message] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    replies: Sequence[str] = ()
    feedback: Sequence[str] = ()
    """Feedback events (JSON) of the session the run recorded (``held_feedback``)."""

    @property
    def run_id(self) -> str:
        return self.run.run_id


Then = Literal["take", "release", "keep"]
"""After a run's ending: take the next run's signals (or let the lease go when none ask
for a run), let the lease go, or keep it (``State.finish_and_continue``)."""


@dataclass(frozen=True, slots=True)
class RunTake:
    """What a run takes, in the same step as the check that its lease still holds: the
    session's whole in-flight list after the take (signals left by an earlier run first),
    and the active risks. The step also forgets the session's put-off run and notes that a
    run started (``WorkingState.note_run``)."""

    signals: tuple[str, ...]
    risks: dict[str, str]


@dataclass(frozen=True, slots=True)
class RunFinish:
    """What ``finish_and_continue`` did after storing the ending."""

    stored: bool
    """False: the run was stored before (a retry whose first attempt landed)."""
    take: RunTake | None = None
    """The next run's signals, taken in the same step (the lease is kept)."""
    released: bool = False
    """The lease was let go of in the same step."""
    work_left: bool = False
    """Released with signals still asking for a run (the session stays marked ready)."""


@dataclass(frozen=True, slots=True)
class SessionOpening:
    """A session's lease and, taken with it, what the worker finds there."""

    lease: Lease
    unsent: dict[str, list[str]]
    """Replies a run stored and a dead worker did not send (the outbox), by run id."""
    left: tuple[str, ...]
    """Signals an earlier run left in flight (it died, or was handed back)."""
    suspended: bool
    """A run of the session waits for people (a checkpoint): nothing was taken."""
    take: RunTake | None
    """The first run's signals (None: nothing to run, or suspended)."""
    released: bool = False
    """Nothing was there to do: the lease was let go of in the same step."""
    work_left: bool = False
    """Released, yet signals asking for a run came meanwhile (the session is marked ready)."""


class RunEndings(ABC):
    """Storing run endings and the outbox of the replies they owe."""

    @abstractmethod
    async def finish_run(self, token: int, ending: RunEnding) -> bool:
        """Store ``ending`` under the fencing ``token`` in one step: the run and its
        messages into the session store, the replies into the outbox, the in-flight
        signals released, the run's end noted (``note_run``) and its feedback events
        kept. True when stored now, False when this run was stored before (a
        retry); raises ``StaleFencingToken`` (storing nothing) if a newer lease exists."""

    @abstractmethod
    async def unsent_replies(self, session_id: str) -> dict[str, list[str]]:
        """The replies (JSON) in the session's outbox, by run id."""

    @abstractmethod
    async def replies_sent(self, session_id: str, run_id: str) -> None:
        """The replies of ``run_id`` are on the broker: drop them from the outbox."""


__all__ = ["RunEnding", "RunEndings", "RunFinish", "RunTake", "SessionOpening", "Then"]
