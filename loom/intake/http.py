"""The HTTP kit of inbound routes: JSON errors, and reading a body within the limits.

The gateway's own routes and every adapter's use it, so all answer alike: ``{"error": ...}``
with the status, 503 + Retry-After while the process drains, 413 past the body limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pydantic_core
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

Endpoint = Callable[[Request], Awaitable[Response]]
logger = logging.getLogger("loom.http")

BODY_TIMEOUT = 30.0
"""Seconds a client has, once its headers are in, to send the whole body."""
_DIGITS = re.compile(r"[0-9]+")


def parse_json(body: bytes | str) -> Any:
    """A sender's JSON, parsed with a nesting limit (about 200 levels, pydantic's parser):
    ``ValueError`` for JSON that is bad or nested deeper, which would otherwise exhaust
    Python's recursion in whatever walks it next, and answer 500."""
    return pydantic_core.from_json(body)


"""A Starlette endpoint: what a route calls with the request."""


class Limits(Protocol):
    """What body reading needs to know of its process (an ``AdapterContext`` has it)."""

    @property
    def draining(self) -> bool: ...

    @property
    def max_body_bytes(self) -> int: ...


def error(status: int, message: str, *, retry_after: float | None = None) -> JSONResponse:
    """``{"error": message}`` with ``status``; ``retry_after`` seconds as a Retry-After."""
    headers = None if retry_after is None else {"retry-after": str(max(1, math.ceil(retry_after)))}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def inbound_body(
    context: Limits, request: Request, refusal: Callable[[bytes], str | None]
) -> bytes | Response:
    """The body of an inbound request, or the answer that ends it: 503 while draining, 413
    past the body limit, 401 with the reason ``refusal`` gives (it sees the body, since a
    signature covers it)."""
    if context.draining:
        return error(503, "shutting down: not accepted; send it to another replica", retry_after=1)
    body = await read_body(request, context.max_body_bytes)
    if isinstance(body, Response):
        return body
    refused = refusal(body)
    return body if refused is None else error(401, refused)


async def read_body(
    request: Request, limit: int, *, timeout: float | None = None
) -> bytes | Response:
    """The request body, or the answer that ends the request: a 413 as soon as it passes
    ``limit`` bytes, a 408 if it has not all come within ``timeout`` seconds (default
    ``BODY_TIMEOUT``). A client that hangs up is logged at DEBUG: nobody is left to answer."""
    declared = request.headers.get("content-length", "")
    # ASCII digits only, and few: int() of "²" or of 5,000 digits raises.
    if _DIGITS.fullmatch(declared) and (len(declared) > 18 or int(declared) > limit):
        return error(413, f"body larger than {limit} bytes")
    seconds = BODY_TIMEOUT if timeout is None else timeout
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return error(413, f"body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        return error(408, f"the body did not arrive within {seconds:g}s")
    except ClientDisconnect:
        logger.debug("%s %s: the client hung up before its body arrived",
                     request.method, request.url.path)  # fmt: skip
        return error(400, "the client hung up before its body arrived")
    return b"".join(chunks)


__all__ = ["BODY_TIMEOUT", "Endpoint", "Limits", "error", "inbound_body", "parse_json", "read_body"]
