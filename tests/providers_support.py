"""What the provider test modules share: tools, fast retries, and closing agents' clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from loom import Agent, tool
from loom.providers.retry import RetryPolicy

INSTRUCTIONS = "You are a terse weather bot."

OPEN_AGENTS: list[Agent] = []


@pytest.fixture(autouse=True)
async def _close_agents() -> AsyncIterator[None]:
    # Close the SDK clients on the test's own loop: one left to the garbage collector tries
    # to close its connections on a later test's loop and logs "Event loop is closed".
    yield
    while OPEN_AGENTS:
        await OPEN_AGENTS.pop().aclose()


def fast_retry(max_retries: int = 2, **options: Any) -> RetryPolicy:
    return RetryPolicy(max_retries=max_retries, initial_delay=0.01, max_delay=0.02, **options)


@tool
def weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


@tool
def clock(tz: str) -> str:
    """The time in a time zone."""
    return f"noon in {tz}"
