"""Waiting in tests for what happens asynchronously (a broker's delivery, a worker's run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


async def eventually(
    check: Callable[[], Awaitable[Any]],
    what: str = "the condition",
    *,
    timeout: float = 60.0,
    interval: float = 0.02,
) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; fail the test
    after ``timeout`` seconds. Tests finish as soon as the condition holds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
