"""A wire-compatible fake LLM server for tests: the official SDK clients talk to it over HTTP.

A Starlette app served by uvicorn on ``127.0.0.1`` (free port) in a background thread, so it
works the same from sync and async tests and whatever event loop the test runs on::

    async def test_it(fake_llm: FakeLLMServer) -> None:
        fake_llm.script("/v1/messages", anthropic_message("hi"))
        async with AsyncAnthropic(
            base_url=fake_llm.anthropic_base_url, api_key="test-key", max_retries=0
        ) as client:
            message = await client.messages.create(...)
        assert fake_llm.requests[0].json["model"] == ...

Each route (``POST /v1/messages``, ``/v1/chat/completions``, ``/v1/responses``) pops the next
scripted reply from its own FIFO queue. An unscripted request gets a 500 (with
``x-should-retry: false`` so the SDKs do not retry it) and fails the test at fixture teardown,
as does a 200 reply whose kind (JSON / SSE) does not match the request's ``"stream"`` flag.

Register the fixture with ``pytest_plugins = ["tests.fakes.llm_server"]`` in
``tests/conftest.py``; always import this module as ``tests.fakes.llm_server`` (never as
``fakes.llm_server``) so there is one copy of its classes.

PYTEST_DONT_REWRITE (no asserts here; stops "already imported" warnings when a test module
imports this before ``pytest_plugins`` registers it)
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.anthropic_wire import (
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    anthropic_stream_error,
    anthropic_usage,
)
from tests.fakes.openai_wire import (
    openai_chat,
    openai_chat_stream,
    openai_chat_usage,
    openai_error,
    openai_response,
    openai_response_stream,
    openai_response_usage,
)
from tests.fakes.threaded_server import ThreadedServer

__all__ = [
    "ANTHROPIC_MESSAGES",
    "OPENAI_CHAT",
    "OPENAI_RESPONSES",
    "FakeLLMServer",
    "FakeReply",
    "RecordedRequest",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "anthropic_stream_error",
    "anthropic_usage",
    "encode_sse",
    "fake_llm",
    "openai_chat",
    "openai_chat_stream",
    "openai_chat_usage",
    "openai_error",
    "openai_response",
    "openai_response_stream",
    "openai_response_usage",
]

ANTHROPIC_MESSAGES = "/v1/messages"
OPENAI_CHAT = "/v1/chat/completions"
OPENAI_RESPONSES = "/v1/responses"
ROUTES = (ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES)

_ALIASES = {
    "messages": ANTHROPIC_MESSAGES,
    "anthropic": ANTHROPIC_MESSAGES,
    "chat": OPENAI_CHAT,
    "chat.completions": OPENAI_CHAT,
    "chat/completions": OPENAI_CHAT,
    "responses": OPENAI_RESPONSES,
}

SSEEvent = tuple[str | None, Mapping[str, Any] | str]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received (recorded before its reply is chosen)."""

    route: str
    """The path, e.g. ``"/v1/messages"`` (the query string is in ``query``)."""
    headers: dict[str, str]
    """Lower-cased header names (e.g. ``x-api-key``, ``authorization``, ``anthropic-version``)."""
    json: Any
    """The decoded JSON body, or None when the body is empty or not JSON."""
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def api_key(self) -> str | None:
        """The key the client sent: ``x-api-key``, else the ``authorization: Bearer`` token
        (anthropic 2.x sends ``api_key`` as a Bearer token, not ``x-api-key``)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True)
class FakeReply:
    """A scripted reply: a JSON body (``json``), an SSE stream (``sse``) or an empty body.

    ``sse`` is a list of ``(event_name | None, data)`` where ``data`` is a dict (sent as compact
    JSON) or a raw string (e.g. ``"[DONE]"``); each event goes out as ``event: <name>\\n``
    (omitted when None) + ``data: <data>\\n\\n``. ``delay`` sleeps before the status line is
    sent; ``event_delay`` sleeps between SSE events.
    """

    status: int = 200
    json: Any = None
    sse: Sequence[SSEEvent] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    event_delay: float = 0.0


ReplyLike = FakeReply | Mapping[str, Any] | Sequence[SSEEvent]
"""A ``FakeReply``, or shorthand: a dict is a 200 JSON reply, a list a 200 SSE reply."""

Scripted = ReplyLike | Callable[[RecordedRequest], ReplyLike]
"""A reply, or a function computing it from the request it answers."""


def encode_sse(events: Sequence[SSEEvent]) -> Iterator[bytes]:
    """Frame events as the providers do: ``event: x\\ndata: {...}\\n\\n`` per event."""
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        lines = [] if name is None else [f"event: {name}"]
        lines.extend(f"data: {line}" for line in payload.split("\n"))
        yield ("\n".join(lines) + "\n\n").encode()


def _as_reply(reply: ReplyLike) -> FakeReply:
    if isinstance(reply, FakeReply):
        return reply
    if isinstance(reply, Mapping):
        return FakeReply(json=dict(reply))
    if isinstance(reply, list | tuple):
        return FakeReply(sse=list(reply))
    raise TypeError(f"not a scripted reply: {reply!r}")


async def _wait_connected(request: Request, delay: float) -> bool:
    """Sleep ``delay`` seconds; False as soon as the client disconnects (e.g. it timed out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay
    while (remaining := deadline - loop.time()) > 0:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(0.02, remaining))
    return True


def _normalize_route(route: str) -> str:
    path = _ALIASES.get(route, route)
    if path not in ROUTES:
        raise ValueError(f"unknown route {route!r}; use one of {ROUTES} or {sorted(_ALIASES)}")
    return path


class FakeLLMServer:
    """A scripted Anthropic / OpenAI HTTP server on loopback (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.problems: list[str] = []
        """Unscripted requests and mismatched replies; the fixture fails the test on any."""
        self.cut = 0
        """Replies whose client closed the connection before they were complete."""
        self._queues: dict[str, collections.deque[Scripted]] = {
            route: collections.deque() for route in ROUTES
        }
        self._lock = threading.Lock()
        self._http: ThreadedServer | None = None
        self.app = Starlette(
            routes=[Route(route, self._handle, methods=["POST"]) for route in ROUTES]
        )

    # ----------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if not self.port:
            raise RuntimeError("FakeLLMServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for ``anthropic.AsyncAnthropic`` (the SDK adds ``/v1/messages``)."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for ``openai.AsyncOpenAI`` (the SDK adds ``/chat/completions``...)."""
        return f"{self.url}/v1"

    # ----------------------------------------------------------------- scripting

    def script(self, route: str, *replies: Scripted) -> Self:
        """Queue replies for ``route``: a path (``"/v1/messages"``, ``"/v1/chat/completions"``,
        ``"/v1/responses"``) or an alias (``"messages"``, ``"chat"``, ``"responses"``)."""
        path = _normalize_route(route)
        for reply in replies:
            if not callable(reply):
                _as_reply(reply)  # reject malformed replies now, not mid-test
        with self._lock:
            self._queues[path].extend(replies)
        return self

    def pending(self, route: str | None = None) -> int:
        """How many scripted replies are not consumed yet (for one route, or all)."""
        with self._lock:
            if route is not None:
                return len(self._queues[_normalize_route(route)])
            return sum(len(queue) for queue in self._queues.values())

    def requests_to(self, route: str) -> list[RecordedRequest]:
        """The recorded requests for one route."""
        path = _normalize_route(route)
        with self._lock:
            return [request for request in self.requests if request.route == path]

    def reset(self) -> None:
        """Drop scripted replies, recorded requests and problems."""
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self.requests.clear()
            self.problems.clear()

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> Self:
        """Bind a free loopback port and serve from a daemon thread; returns once listening."""
        if self._http is not None:
            raise RuntimeError("FakeLLMServer already started")
        self._http = ThreadedServer(self.app, "fake-llm-server", self.host)
        self.port = self._http.start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (in-flight replies get about a second to finish) and join the thread."""
        http, self._http = self._http, None
        if http is not None:
            http.stop(timeout)

    @property
    def thread(self) -> threading.Thread | None:
        return self._http.thread if self._http is not None else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- serving

    def _problem(self, message: str, route: str) -> Response:
        with self._lock:
            self.problems.append(message)
        text = f"fake_llm: {message}"
        if route == ANTHROPIC_MESSAGES:
            body = anthropic_error(500, "api_error", text)
        else:
            body = openai_error(500, text, "server_error")
        # x-should-retry: false -> the SDKs raise at once instead of retrying the 500.
        return Response(
            json.dumps(body),
            status_code=500,
            media_type="application/json",
            headers={"x-should-retry": "false"},
        )

    async def _handle(self, request: Request) -> Response:
        route = request.url.path
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            route=route,
            headers={name.lower(): value for name, value in request.headers.items()},
            json=body,
            query=dict(request.query_params),
            body=raw,
        )
        with self._lock:
            self.requests.append(recorded)
            queue = self._queues[route]
            scripted = queue.popleft() if queue else None
        if scripted is None:
            return self._problem(f"no scripted response for POST {route}", route)
        try:
            reply = _as_reply(scripted(recorded) if callable(scripted) else scripted)
        except Exception as error:
            return self._problem(f"scripted reply for POST {route} raised {error!r}", route)

        wants_stream = isinstance(body, Mapping) and body.get("stream") is True
        if reply.status == 200 and reply.sse is not None and not wants_stream:
            return self._problem(f"SSE reply scripted for a non-stream POST {route}", route)
        if reply.status == 200 and reply.sse is None and reply.json is not None and wants_stream:
            return self._problem(f"JSON reply scripted for a stream=true POST {route}", route)

        if reply.delay and not await _wait_connected(request, reply.delay):
            self._count_cut()
            return Response(b"", status_code=499)  # the client gave up; nobody reads this
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        id_header = "request-id" if route == ANTHROPIC_MESSAGES else "x-request-id"
        headers = {id_header: request_id, **reply.headers}
        if reply.sse is not None:
            return StreamingResponse(
                self._stream(reply.sse, reply.event_delay),
                status_code=reply.status,
                headers={"cache-control": "no-cache", **headers},
                media_type="text/event-stream; charset=utf-8",
            )
        if reply.json is not None:
            return Response(
                json.dumps(reply.json),
                status_code=reply.status,
                headers=headers,
                media_type="application/json",
            )
        return Response(b"", status_code=reply.status, headers=headers)

    async def _stream(self, events: Sequence[SSEEvent], event_delay: float) -> AsyncIterator[bytes]:
        try:
            for index, chunk in enumerate(encode_sse(events)):
                if event_delay and index:
                    await asyncio.sleep(event_delay)
                yield chunk
        except BaseException:  # the client went away mid-stream (cancelled, closed)
            self._count_cut()
            raise

    def _count_cut(self) -> None:
        with self._lock:
            self.cut += 1


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A started ``FakeLLMServer``; stopped (thread joined) at teardown, where any unscripted
    request or mismatched reply fails the test."""
    server = FakeLLMServer().start()
    try:
        yield server
    finally:
        server.stop()
    if server.problems:
        pytest.fail("fake LLM server: " + "; ".join(server.problems), pytrace=False)
