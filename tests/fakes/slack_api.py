"""A fake Slack Web API on loopback: records ``chat.postMessage``, ``chat.postEphemeral``
and ``chat.update`` calls, answers failures.

A Starlette app served by uvicorn on ``127.0.0.1`` (free port) in a background thread, so
slack_sdk's ``AsyncWebClient`` talks real HTTP to it::

    with FakeSlackAPI(token="xoxb-test") as slack:
        slack.fail(rate_limited(retry_after=1), api_error("internal_error"))
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        ...
        [message] = slack.messages

Like Slack, it answers a wrong or missing bot token with ``{"ok": false, "error":
"invalid_auth"}``, a call without ``channel`` with ``channel_not_found``, and scripted
failures (``fail``) before the next successes, in order.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.threaded_server import ThreadedServer

__all__ = [
    "EphemeralMessage",
    "FakeSlackAPI",
    "PostedMessage",
    "SlackFailure",
    "UpdatedMessage",
    "api_error",
    "rate_limited",
]


@dataclass(frozen=True)
class PostedMessage:
    """One ``chat.postMessage`` call the fake accepted."""

    channel: str
    text: str
    thread_ts: str | None
    ts: str
    """The timestamp the fake gave the new message."""
    token: str | None
    blocks: list[dict[str, Any]] | None = None
    """The Block Kit blocks, when the call sent any."""


@dataclass(frozen=True)
class EphemeralMessage:
    """One ``chat.postEphemeral`` call: a message only ``user`` sees."""

    channel: str
    user: str
    text: str
    thread_ts: str | None


@dataclass(frozen=True)
class UpdatedMessage:
    """One ``chat.update`` call: the message ``ts`` in ``channel`` replaced."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None


@dataclass(frozen=True)
class SlackFailure:
    """A scripted failure: the HTTP status, Slack's JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def api_error(code: str) -> SlackFailure:
    """Slack's way to fail a call: HTTP 200 with ``{"ok": false, "error": code}``."""
    return SlackFailure(200, {"ok": False, "error": code})


def rate_limited(retry_after: int = 1) -> SlackFailure:
    """HTTP 429 with ``Retry-After``, as Slack answers past a method's rate limit."""
    return SlackFailure(
        429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
    )


class FakeSlackAPI:
    """The fake Web API; ``api_url`` is the base URL for ``AsyncWebClient(base_url=...)``."""

    def __init__(self, token: str = "xoxb-test", host: str = "127.0.0.1") -> None:
        self.token = token
        self.host = host
        self.port = 0
        self.messages: list[PostedMessage] = []
        self.ephemerals: list[EphemeralMessage] = []
        self.updates: list[UpdatedMessage] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        """Every call (method, arguments), failed ones included."""
        self._failures: collections.deque[SlackFailure] = collections.deque()
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._http: ThreadedServer | None = None
        self.app = Starlette(routes=[Route("/api/{method}", self._handle, methods=["POST"])])

    @property
    def api_url(self) -> str:
        if not self.port:
            raise RuntimeError("FakeSlackAPI is not started")
        return f"http://{self.host}:{self.port}/api/"

    def fail(self, *failures: SlackFailure) -> Self:
        """Answer the next calls with these failures, in order."""
        with self._lock:
            self._failures.extend(failures)
        return self

    def posted(self) -> list[PostedMessage]:
        with self._lock:
            return list(self.messages)

    async def _handle(self, request: Request) -> Response:
        method = request.path_params["method"]
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            arguments: dict[str, Any] = json.loads(raw) if raw else {}
        else:
            arguments = dict(parse_qsl(raw.decode()))
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token if scheme.lower() == "bearer" else arguments.get("token", "")
        with self._lock:
            self.calls.append((method, arguments))
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return JSONResponse(failure.body, failure.status, headers=failure.headers)
        if token != self.token:
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        if method not in ("chat.postMessage", "chat.postEphemeral", "chat.update"):
            return JSONResponse({"ok": False, "error": "unknown_method"})
        channel = arguments.get("channel")
        if not channel:
            return JSONResponse({"ok": False, "error": "channel_not_found"})
        blocks = arguments.get("blocks")
        if isinstance(blocks, str):  # form-encoded calls send blocks as JSON text
            blocks = json.loads(blocks)
        text = arguments.get("text") or ""
        if method == "chat.postEphemeral":
            ephemeral = EphemeralMessage(
                channel, arguments.get("user", ""), text, arguments.get("thread_ts")
            )
            with self._lock:
                self.ephemerals.append(ephemeral)
            return JSONResponse({"ok": True, "message_ts": f"{int(time.time())}.000000"})
        if method == "chat.update":
            ts = arguments.get("ts", "")
            with self._lock:
                self.updates.append(UpdatedMessage(channel, ts, text, blocks))
            return JSONResponse({"ok": True, "channel": channel, "ts": ts, "text": text})
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        message = PostedMessage(channel, text, arguments.get("thread_ts"), ts, token, blocks)
        with self._lock:
            self.messages.append(message)
        return JSONResponse(
            {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {"type": "message", "text": message.text, "ts": ts},
            }
        )

    def start(self, timeout: float = 10.0) -> Self:
        self._http = ThreadedServer(self.app, "fake-slack", self.host)
        self.port = self._http.start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.stop(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
