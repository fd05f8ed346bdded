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
from typing import Any

from loom.core.messages import Message
from loom.core.session_store import RunRecord


@dataclass(frozen=True, slots=True)
class RunEnding:
    """What one run leaves behind: its record, the messages and metadata it adds to the
    session, and the replies (JSON) its signals are owed."""

    session_id: str
    run: RunRecord
    messages: Sequence[Message] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    replies: Sequence[str] = ()

    @property
    def run_id(self) -> str:
        return self.run.run_id


class RunEndings(ABC):
    """Storing run endings and the outbox of the replies they owe."""

    @abstractmethod
    async def finish_run(self, token: int, ending: RunEnding) -> bool:
        """Store ``ending`` under the fencing ``token`` in one step: the run and its
        messages into the session store, the replies into the outbox, and the in-flight
        signals released. True when stored now, False when this run was stored before (a
        retry); raises ``StaleFencingToken`` (storing nothing) if a newer lease exists."""

    @abstractmethod
    async def unsent_replies(self, session_id: str) -> dict[str, list[str]]:
        """The replies (JSON) in the session's outbox, by run id."""

    @abstractmethod
    async def replies_sent(self, session_id: str, run_id: str) -> None:
        """The replies of ``run_id`` are on the broker: drop them from the outbox."""


__all__ = ["RunEnding", "RunEndings"]
