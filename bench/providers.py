"""Time per model call through Loom against a bare SDK call, for the same reply.

Two settings, bare and Loom calls interleaved in each so drift hits both equally:

1. over loopback TCP to the tests' fake wire server (``tests/fakes/llm_server.py``, uvicorn
   in a thread of this process): the issue's measurement, a real HTTP round trip per call;
2. in process: both SDK clients get an ``httpx2.MockTransport`` that answers at once with
   the same wire reply, so the figures are pure client-side cost (SDK, plus Loom's run) and
   the ratio is the harshest view of Loom's overhead.

(An earlier version of the fake server bound its socket without ``IPPROTO_TCP``, so asyncio
never set TCP_NODELAY and every other response stalled ~40 ms on a delayed ACK; fixed.)

Prints figures; asserts nothing. Target (issue 3): Loom at most 1.2x the bare SDK call.
Run: ``uv run python bench/providers.py [--calls 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import httpx2
import openai

from loom import Agent, Model
from tests.fakes.llm_server import FakeLLMServer, anthropic_message, openai_chat

Call = Callable[[], Awaitable[object]]
ANTHROPIC_REPLY = anthropic_message(text="pong", model="claude-sonnet-4-6")
OPENAI_REPLY = openai_chat(text="pong", model="gpt-5.1")


async def _interleaved(calls: int, bare: Call, loom: Call) -> tuple[list[float], list[float]]:
    for _ in range(20):  # warm-up: connections, imports, caches
        await bare()
        await loom()
    bare_times: list[float] = []
    loom_times: list[float] = []
    for _ in range(calls):
        for fn, times in ((bare, bare_times), (loom, loom_times)):
            start = time.perf_counter()
            await fn()
            times.append(time.perf_counter() - start)
    return bare_times, loom_times


def _report(label: str, times: tuple[list[float], list[float]]) -> None:
    bare, loom = (statistics.median(t) * 1e3 for t in times)
    print(
        f"{label:<38} bare SDK {bare:7.3f} ms   loom {loom:7.3f} ms   "
        f"ratio {loom / bare:.2f}x   loom adds {loom - bare:.3f} ms a call (medians)"
    )


def _mock_client(reply: dict[str, Any]) -> httpx2.AsyncClient:
    body = json.dumps(reply).encode()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    return httpx2.AsyncClient(transport=httpx2.MockTransport(answer))


async def _anthropic(calls: int, base_url: str, http: Callable[[], Any]) -> Any:
    bare = anthropic.AsyncAnthropic(
        api_key="bench", base_url=base_url, max_retries=0, http_client=http()
    )
    sdk = anthropic.AsyncAnthropic(
        api_key="bench", base_url=base_url, max_retries=0, http_client=http()
    )
    agent = Agent(Model.anthropic("claude-sonnet-4-6", client=sdk))

    async def bare_call() -> object:
        return await bare.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=8192,
            messages=[{"role": "user", "content": "ping"}],
        )

    async def loom_call() -> object:
        return (await agent.run("ping")).raise_for_status()

    try:
        return await _interleaved(calls, bare_call, loom_call)
    finally:
        await bare.close()
        await agent.aclose()


async def _openai(calls: int, base_url: str, http: Callable[[], Any]) -> Any:
    bare = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0, http_client=http())
    sdk = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0, http_client=http())
    agent = Agent(Model.openai("gpt-5.1", client=sdk))

    async def bare_call() -> object:
        return await bare.chat.completions.create(
            model="gpt-5.1", messages=[{"role": "user", "content": "ping"}]
        )

    async def loom_call() -> object:
        return (await agent.run("ping")).raise_for_status()

    try:
        return await _interleaved(calls, bare_call, loom_call)
    finally:
        await bare.close()
        await agent.aclose()


async def main(calls: int) -> None:
    print(f"loom provider benchmark: {calls} calls each, bare and loom interleaved")
    replies = 2 * (calls + 20)
    with FakeLLMServer() as server:
        server.script("messages", *[ANTHROPIC_REPLY] * replies)
        server.script("chat", *[OPENAI_REPLY] * replies)
        _report(
            "anthropic messages, loopback TCP",
            await _anthropic(calls, server.anthropic_base_url, httpx2.AsyncClient),
        )
        _report(
            "openai chat, loopback TCP",
            await _openai(calls, server.openai_base_url, httpx2.AsyncClient),
        )
    _report(
        "anthropic messages, in process",
        await _anthropic(calls, "http://fake", lambda: _mock_client(ANTHROPIC_REPLY)),
    )
    _report(
        "openai chat, in process",
        await _openai(calls, "http://fake/v1", lambda: _mock_client(OPENAI_REPLY)),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    asyncio.run(main(parser.parse_args().calls))
