"""Bounded retries for model calls, honouring the provider's Retry-After.

The SDK clients are built with ``max_retries=0`` and retried here instead, so every provider
retries the same way, within a cap a run's timeout can rely on.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from loom.errors import ProviderError

logger = logging.getLogger("loom.providers")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before trying a retryable model call again."""

    max_retries: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    """A Retry-After longer than this is not waited for: the call fails at once."""

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds before retry number ``retry`` (0-based); None when it is not worth waiting."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        backoff: float = min(self.initial_delay * 2**retry, self.max_delay)
        return backoff * (1 - 0.25 * random.random())


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    classify: Callable[[Exception], ProviderError],
) -> T:
    """Run ``call``; retry retryable failures per ``policy``; raise a ``ProviderError``."""
    retry = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            error = exc if isinstance(exc, ProviderError) else classify(exc)
            error.attempts = retry + 1
            if not error.retryable or retry >= policy.max_retries:
                raise error from exc
            wait = policy.delay(retry, error.retry_after)
            if wait is None:
                error.args = (
                    f"{error.args[0]} (Retry-After {error.retry_after:g}s exceeds the "
                    f"{policy.max_retry_after:g}s limit)",
                )
                raise error from exc
            logger.warning("%s; retrying in %.2fs (retry %d)", error, wait, retry + 1)
            await asyncio.sleep(wait)
            retry += 1


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            seconds = float(millis) / 1000
            if math.isfinite(seconds):
                return max(seconds, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:  # an HTTP date; anything else is ignored (the caller falls back to backoff)
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return max(parsed.timestamp() - time.time(), 0.0)
