"""Time per model call through Loom against a bare SDK call, for the same reply.

Two settings, bare and Loom calls interleaved in each so drift hits both equally:

1. over loopback TCP to the tests' fake wire server (``tests/fakes/llm_server.py``, uvicorn
   in a thread of this process): the issue's measurement, a real HTTP round trip per call;
2. in process: both SDK clients get an ``httpx2.MockTransport`` that answers at once with
   the same wire reply, so the figures are pure client-side cost (SDK, plus Loom's run) and
   the ratio is the harshest view of Loom's overhead.

(An earlier version of the fake server bound its socket without ``IPPROTO_TCP``, so asyncio
never set TCP_NODELAY and every other response stalled ~40 ms on a delayed ACK; fixed.)

Then, as the history grows (issue 20): one model call through Loom's provider
(``model.complete``) at 0, 100 and 1,000 history messages, against the same client posting
the same JSON body, serialised beforehand, through its raw request method
(``client.post(..., content=...)``): what Loom adds per call over a raw HTTP post, in
process and over loopback TCP; and over loopback, the longest time the event loop was
blocked during Loom's calls (a ticker task records the longest gap between its turns).

Prints figures; asserts nothing. Targets: Loom at most 1.2x the bare SDK call (issue 3); at
most 0.5 ms over the raw post at every history length, no stall over 1 ms (issue 20).
Run: ``uv run python bench/providers.py [--calls 300] [--history-calls 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anthropic
import httpx2
import openai
from anthropic.types import Message as AnthropicMessage
from openai.types.chat import ChatCompletion

from loom import Agent, Generation, Model
from loom.core.messages import Message, ToolCall
from loom.providers.base import ModelRequest
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


HISTORY_SIZES = (0, 100, 1000)
INSTRUCTIONS = "You are a terse operations assistant."


def history(size: int) -> list[Message]:
    """``size`` messages of tool-using turns, then the user's question."""
    messages: list[Message] = []
    for i in range(size // 2):
        call = ToolCall(f"call_{i}", "check", {"host": f"host-{i % 7}", "deep": True})
        messages.append(Message.assistant(f"checking host-{i % 7}", (call,)))
        messages.append(Message.tool_result(call, f"host-{i % 7}: ok " + "detail " * 20))
    return [*messages, Message.user("ping")]


def openai_wire(messages: list[Message]) -> dict[str, Any]:
    """The chat request as plain JSON, built here so the raw post needs no Loom code."""
    wire: list[dict[str, Any]] = [{"role": "system", "content": INSTRUCTIONS}]
    for m in messages:
        if m.role == "tool":
            wire.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.role == "user":
            wire.append({"role": "user", "content": m.content})
        else:
            calls = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
            wire.append({"role": "assistant", "content": m.content, "tool_calls": calls})
    return {"model": "gpt-4.1", "messages": wire}


def anthropic_wire(messages: list[Message]) -> dict[str, Any]:
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            turns.append({"role": "user", "content": [block]})
        elif m.role == "user":
            if turns and turns[-1]["role"] == "user":
                turns[-1]["content"].append({"type": "text", "text": m.content})
            else:
                turns.append({"role": "user", "content": m.content})
        else:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}]
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            ]
            turns.append({"role": "assistant", "content": blocks})
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 8192,
        "messages": turns,
        "system": [{"type": "text", "text": INSTRUCTIONS}],
    }


RESPONDER = """
import asyncio, sys
BODY = sys.stdin.buffer.read()
HEAD = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n"

async def serve(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        length = 0
        for line in head.split(b"\\r\\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        writer.write(HEAD % len(BODY) + BODY)
    writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def responder(reply: dict[str, Any]) -> AsyncIterator[int]:
    """A process answering every POST with ``reply``: a server that takes no time of this
    process, so the stall watch sees only the client's own work."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RESPONDER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(json.dumps(reply).encode())
    process.stdin.close()
    port = int(await process.stdout.readline())
    try:
        yield port
    finally:
        process.terminate()
        await process.wait()


class StallWatch:
    """The longest gap between the turns of a task that only yields: how long the event
    loop was blocked at a stretch while it ran."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _history_call(
    kind: str, size: int, calls: int, base_url: str, http: Callable[[], Any], stall_calls: int = 0
) -> tuple[list[float], list[float], float, float]:
    """Raw-post and Loom call times at one history length; or, with ``stall_calls``, the
    longest stall of the event loop during that many Loom calls, and raw posts."""
    request = ModelRequest(INSTRUCTIONS, history(size), (), Generation())
    if kind == "openai":
        client: Any = openai.AsyncOpenAI(
            api_key="bench", base_url=base_url, max_retries=0, http_client=http()
        )
        model: Any = Model.openai("gpt-4.1", client=client)
        path, cast_to, options = (
            "/chat/completions",
            ChatCompletion,
            {"security": {"bearer_auth": True}},
        )
        body = json.dumps(openai_wire(request.messages), separators=(",", ":")).encode()
    else:
        client = anthropic.AsyncAnthropic(
            api_key="bench", base_url=base_url, max_retries=0, http_client=http()
        )
        model = Model.anthropic("claude-sonnet-4-6", client=client)
        path, cast_to, options = "/v1/messages", AnthropicMessage, {}
        body = json.dumps(anthropic_wire(request.messages), separators=(",", ":")).encode()

    async def raw_call() -> object:
        return await client.post(path, content=body, cast_to=cast_to, options=options)

    async def loom_call() -> object:
        return await model.complete(request)

    async def longest_stall(call: Call) -> float:
        watch = StallWatch()
        watch.start()
        for _ in range(stall_calls):
            await call()
        await watch.stop()
        return watch.longest

    try:
        if stall_calls:
            # Connections first, so neither side's figure includes opening one; then Loom's
            # calls, the first of which meets the whole history for the first time.
            await raw_call()
            loom_stall = await longest_stall(loom_call)
            return [], [], max(loom_stall, 0.0), await longest_stall(raw_call)
        raw_times, loom_times = await _interleaved(calls, raw_call, loom_call)
        return raw_times, loom_times, 0.0, 0.0
    finally:
        await model.aclose()


async def history_figures(calls: int) -> None:
    print(f"per-call cost as history grows: {calls} calls each, raw post and loom interleaved")
    replies = {"openai": OPENAI_REPLY, "anthropic": ANTHROPIC_REPLY}
    for kind in ("openai", "anthropic"):
        async with responder(replies[kind]) as port:
            url = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
            for size in HISTORY_SIZES:
                raw, loom, _, _ = await _history_call(
                    kind,
                    size,
                    calls,
                    "http://fake/v1" if kind == "openai" else "http://fake",
                    lambda kind=kind: _mock_client(replies[kind]),  # type: ignore[misc]
                )
                raw_ms, loom_ms = statistics.median(raw) * 1e3, statistics.median(loom) * 1e3
                *_, loom_stall, raw_stall = await _history_call(
                    kind, size, 0, url, httpx2.AsyncClient, stall_calls=20
                )
                print(
                    f"  {kind:<9} {size:>5} messages: raw post {raw_ms:7.3f} ms   "
                    f"loom {loom_ms:7.3f} ms   ratio {loom_ms / raw_ms:5.2f}x   "
                    f"loom adds {loom_ms - raw_ms:6.3f} ms   longest loop stall (TCP): "
                    f"loom {loom_stall * 1e3:5.2f} ms, raw post {raw_stall * 1e3:5.2f} ms"
                )


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


async def run_all(calls: int, history_calls: int) -> None:
    await main(calls)
    await history_figures(history_calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--history-calls", type=int, default=100)
    parser.add_argument("--history-only", action="store_true")
    args = parser.parse_args()
    if args.history_only:
        asyncio.run(history_figures(args.history_calls))
    else:
        asyncio.run(run_all(args.calls, args.history_calls))
