"""Slow and vanishing clients (issue 21, item 5): headers that never finish are cut off, a
body that does not come is a 408, and a client that hangs up is no ERROR traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loom.daemon.http_server import (
    CoalescingTransport,
    GuardedH11Protocol,
    GuardedHttpToolsProtocol,
)
from loom.intake.http import read_body


async def echo(request: Request) -> Response:
    body = await read_body(request, 1000, timeout=0.3)
    return body if isinstance(body, Response) else Response(body)


async def slow_echo(request: Request) -> Response:
    await asyncio.sleep(0.6)  # twice the header timeout
    return await echo(request)


class QuickH11(GuardedH11Protocol):
    header_timeout = 0.3


class QuickHttpTools(GuardedHttpToolsProtocol):
    header_timeout = 0.3


@pytest.fixture(params=[QuickHttpTools, QuickH11], ids=["httptools", "h11"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """A server with the guarded protocol: httptools (what Loom serves with) and h11."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    app = Starlette(
        routes=[Route("/echo", echo, methods=["POST"]), Route("/slow", slow_echo, methods=["POST"])]
    )
    protocol = request.param
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_config=None, log_level="debug")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve([listener]))
    for _ in range(500):  # uvicorn has no event for it
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield listener.getsockname()[1]
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)


async def exchange(port: int, data: bytes, *, hang_up: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if hang_up:
        writer.close()
        return b""
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_headers_that_never_finish_are_cut_off_quietly(port: int) -> None:
    """Before: the connection stayed open for as long as the client liked."""
    answer = await exchange(port, b"POST /echo HTTP/1.1\r\nhost: loom\r\n")
    assert answer == b""  # closed, nothing said: no request started


async def test_a_body_that_does_not_come_is_a_408(port: int) -> None:
    answer = await exchange(
        port, b"POST /echo HTTP/1.1\r\nhost: loom\r\ncontent-length: 50\r\n\r\nonly part"
    )
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"did not arrive within 0.3s" in answer


async def test_a_whole_request_is_answered(port: int) -> None:
    answer = await exchange(
        port,
        b"POST /echo HTTP/1.1\r\nhost: loom\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
    )
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"hi")


async def more(reader: asyncio.StreamReader) -> bytes:
    data = await asyncio.wait_for(reader.read(4096), 5)
    assert data, "the server closed the connection"
    return data


async def test_keep_alive_requests_and_pipelined_ones_are_each_answered(port: int) -> None:
    """The timer waits for headers only: a request whose headers are in (pipelined behind
    another, or sent on a kept-alive connection) is answered however long the first took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = b"POST /echo HTTP/1.1\r\nhost: loom\r\ncontent-length: 2\r\n\r\n"
        slow = request.replace(b"/echo", b"/slow")
        writer.write(request + b"a1" + slow + b"a2")  # two at once: pipelined
        await writer.drain()
        seen = b""
        while seen.count(b"HTTP/1.1 200") < 2:
            seen += await more(reader)
        await asyncio.sleep(0.15)  # half the header timeout, kept alive
        writer.write(request + b"a3")
        await writer.drain()
        while not seen.endswith(b"a3"):
            seen += await more(reader)
        assert seen.count(b"HTTP/1.1 200") == 3
        assert seen.index(b"a1") < seen.index(b"a2") < seen.index(b"a3")
        # Idle past the header timeout after the last answer: closed, nothing said.
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


async def test_a_client_that_hangs_up_mid_body_is_no_error(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every such disconnect logged "Exception in ASGI application" at ERROR."""
    caplog.set_level(logging.DEBUG)
    await exchange(
        port, b"POST /echo HTTP/1.1\r\nhost: loom\r\ncontent-length: 50\r\n\r\npart", hang_up=True
    )
    for _ in range(100):
        if any("hung up" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    [hung_up] = [r for r in caplog.records if "hung up" in r.getMessage()]
    assert hung_up.levelno == logging.DEBUG


class Recording:
    """A transport that records its writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


async def test_a_response_goes_out_in_one_write() -> None:
    """Before: uvicorn wrote a response's head and its body apart, two system calls."""
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    transport.write(b'{"status":"accepted"}')
    assert inner.writes == []  # held until the end of this step
    await asyncio.sleep(0)
    assert inner.writes == [b'HTTP/1.1 202 Accepted\r\n\r\n{"status":"accepted"}']
    assert transport.get_extra_info("peername") == "info peername"  # the rest is the inner's


async def test_what_is_held_is_bounded_and_sent_before_closing() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    chunk = b"x" * 40_000
    transport.write(chunk)
    transport.write(chunk)  # past FLUSH_BYTES: out at once, not held for the step
    assert inner.writes == [chunk + chunk]
    transport.write(b"last")
    transport.close()
    assert inner.writes[-1] == b"last"
    assert inner.closed
    await asyncio.sleep(0)  # the step's flush finds nothing, and writes nothing closed
    assert len(inner.writes) == 2
