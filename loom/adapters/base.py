"""The adapter contract: how an outside system sends signals in and receives replies.

An adapter may do any of three things, each in the role that owns it:

- ``routes(daemon)``: HTTP routes the gateway serves (Slack events, a webhook);
- ``start(daemon)`` / ``stop()``: background work of the scheduler role (cron, heartbeat);
- ``replies_to(address)`` / ``send_reply(reply)``: deliver a finished run's answer to a
  signal's ``reply_to`` address (a Slack thread, a callback URL), in the worker role.

Adapters publish through ``loom.daemon.http.accept`` (HTTP, with dedupe and 503 on broker
failure) or ``loom.wire.publish_signal`` (confirmed publish), never around them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from loom.errors import LoomError

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from loom.daemon.app import Daemon


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
    """The run's status: ``completed``, ``failed``, ``cancelled`` or ``interrupted``."""
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
        return self.status == "completed"

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


class Adapter:
    """Base class of adapters; override what the adapter does, the rest does nothing."""

    name: str = "adapter"

    def routes(self, daemon: Daemon) -> list[BaseRoute]:
        """Routes the gateway adds for this adapter."""
        return []

    def openapi(self) -> dict[str, Any]:
        """OpenAPI path items of ``routes()``, merged into ``GET /openapi.json``."""
        return {}

    @property
    def scheduled(self) -> bool:
        """True when the adapter runs background work in the scheduler role."""
        return False

    async def start(self, daemon: Daemon) -> None:
        """Start background work (scheduler role only)."""

    async def stop(self) -> None:
        """Stop background work; must be safe when never started."""

    async def check(self) -> dict[str, bool]:
        """Readiness checks of a started adapter (name -> ok)."""
        return {}

    def replies_to(self, address: str) -> bool:
        """True when this adapter delivers replies to ``address`` (a signal's reply_to)."""
        return False

    async def send_reply(self, reply: Reply) -> None:
        """Deliver ``reply``; raise to have it retried (and dead-lettered past the retry
        budget), or ``UndeliverableReply`` to dead-letter it now. An exception with a
        ``retry_after`` attribute (seconds) sets the least pause before the next try."""
        raise NotImplementedError(f"{type(self).__name__} sends no replies")

    async def aclose(self) -> None:
        """Release clients (HTTP sessions) when the process stops."""


__all__ = ["Adapter", "Reply", "UndeliverableReply"]
