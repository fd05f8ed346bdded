"""The adapter contract: how an outside system sends signals in and receives replies.

An adapter may do any of three things, each in the role that owns it:

- ``routes(context)``: HTTP routes the gateway serves (Slack events, a webhook);
- ``start(context)`` / ``stop()``: background work of the scheduler role (cron, heartbeat);
- ``replies_to(address)`` / ``send_reply(reply)``: deliver a finished run's answer to a
  signal's ``reply_to`` address (a Slack thread, a callback URL), in the worker role.

``context`` is an ``AdapterContext``, never the Daemon. Adapters publish through its
intake: ``context.accept`` (HTTP, with dedupe and 503 on broker failure) or
``context.publish`` (confirmed publish), never around them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom.intake.replies import Reply

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from loom.intake.context import AdapterContext


class Adapter:
    """Base class of adapters; override what the adapter does, the rest does nothing."""

    name: str = "adapter"
    reply_prefixes: tuple[str, ...] = ()
    """How the addresses ``replies_to`` accepts begin (``"slack:"``, ``"https://"``): named
    to a sender whose ``reply_to`` no adapter delivers to, and in the OpenAPI document."""

    def routes(self, context: AdapterContext) -> list[BaseRoute]:
        """Routes the gateway adds for this adapter."""
        return []

    def openapi(self) -> dict[str, Any]:
        """OpenAPI path items of ``routes()``, merged into ``GET /openapi.json``."""
        return {}

    @property
    def scheduled(self) -> bool:
        """True when the adapter runs background work in the scheduler role."""
        return False

    async def start(self, context: AdapterContext) -> None:
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


__all__ = ["Adapter"]
