"""Replies: a finished run's answer on its way back to the address a signal named.

The worker publishes them, the reply dispatcher hands each to the adapter that
``replies_to`` its address.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from loom.core.approvals import Approval
from loom.errors import LoomError

AWAITING_APPROVAL = "awaiting_approval"
"""A reply's status while its run waits for a person: not an answer, and not a failure."""


class UndeliverableReply(LoomError):
    """A reply that no retry can deliver (a refused address, no such URL): ``send_reply``
    raises it to have the reply dead-lettered at once instead of retried.

    Any other exception is retried; one with a ``retry_after`` attribute (seconds, or None)
    is not retried before that pause.
    """


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished run's answer, on its way to the address a signal asked to be answered at."""

    reply_to: str
    session_id: str
    run_id: str
    status: str
    """The run's status: ``completed``, ``failed``, ``cancelled`` or ``interrupted``; or
    ``awaiting_approval`` for the request of a paused run (``extra["approvals"]`` lists the
    calls waiting, as ``Approval.to_dict()``; its final answer follows in another reply)."""
    output: str
    error: str | None = None
    signal_ids: tuple[str, ...] = ()
    signal_source: str = ""
    """The source of the (first) signal that asked for the reply, e.g. ``slack``."""
    extra: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    """Deliveries of this reply that failed so far (the dispatcher's retries count them)."""
    first_failed_at: float | None = None
    """When the first delivery failed (Unix time): the retry budget runs from there."""

    @property
    def ok(self) -> bool:
        """True for a completed run's answer (not for a request for approval)."""
        return self.status == "completed"

    @property
    def awaiting_approval(self) -> bool:
        """True for a paused run's request for decisions: neither an answer nor a failure."""
        return self.status == AWAITING_APPROVAL

    @property
    def key(self) -> str:
        """What tells this reply from the run's others: the run id for its answer; for a
        request, the run id and its approvals (a run may pause more than once, and its
        answer comes later with the same run id). Callbacks send it as Idempotency-Key."""
        if not self.awaiting_approval:
            return self.run_id
        listed = self.extra.get("approvals")
        ids = sorted(
            str(entry.get("id"))
            for entry in (listed if isinstance(listed, list) else [])
            if isinstance(entry, dict)
        )
        digest = hashlib.sha256("+".join(ids).encode()).hexdigest()[:16]
        return f"{self.run_id}:approvals:{digest}"

    def approvals(self) -> tuple[Approval, ...]:
        """The approvals a request names (``extra["approvals"]``); raises ``ValueError``
        when one is malformed."""
        listed = self.extra.get("approvals") or []
        if not isinstance(listed, list):
            raise ValueError("a reply's extra.approvals must be a list")
        try:
            return tuple(Approval.from_dict(entry) for entry in listed)
        except (KeyError, TypeError, AttributeError) as problem:
            raise ValueError(
                f"a reply's extra.approvals holds a malformed approval: {problem!r}"
            ) from problem

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Reply:
        """Parse a reply; fields a newer version added are ignored, missing optional
        ones take their defaults (replies queued by an older version)."""
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("a reply is a JSON object")
        missing = {"reply_to", "session_id", "run_id", "status", "output"} - data.keys()
        if missing:
            raise ValueError(f"a reply needs {', '.join(sorted(missing))}")
        known = {f.name for f in fields(cls)}
        data = {key: value for key, value in data.items() if key in known}
        data["signal_ids"] = tuple(data.get("signal_ids") or ())
        attempts = data.get("attempts", 0)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            raise ValueError(f"a reply's attempts must be a count, got {attempts!r}")
        first = data.get("first_failed_at")
        if first is not None and (not isinstance(first, int | float) or isinstance(first, bool)):
            raise ValueError(f"a reply's first_failed_at must be a Unix time, got {first!r}")
        return cls(**data)


__all__ = ["AWAITING_APPROVAL", "Reply", "UndeliverableReply"]
