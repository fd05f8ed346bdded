"""Deprecated path: the intake port and its HTTP kit live in ``loom.intake`` now.

``accept(daemon, signal)`` and ``inbound_body(daemon, ...)`` keep their old signatures here;
new code calls ``context.accept(signal)`` on the ``AdapterContext`` it is given.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from loom.intake import http
from loom.intake.context import AdapterContext, HasContext, context_of
from loom.intake.http import error, read_body
from loom.intake.port import CLAIM_MARGIN
from loom.signals import RuntimeSignal


async def accept(daemon: AdapterContext | HasContext, signal: RuntimeSignal) -> Response:
    """``context.accept(signal)`` of the daemon's adapter context."""
    return await context_of(daemon).accept(signal)


async def inbound_body(
    daemon: AdapterContext | HasContext, request: Request, refusal: Callable[[bytes], str | None]
) -> bytes | Response:
    """``loom.intake.http.inbound_body`` with the daemon's adapter context."""
    return await http.inbound_body(context_of(daemon), request, refusal)


__all__ = ["CLAIM_MARGIN", "accept", "error", "inbound_body", "read_body"]
