"""A real HTTP receiver for callback tests: Starlette served by uvicorn on a free loopback port.

It runs in a background thread (its own event loop), records every request it gets and
answers with the statuses it was told to, then 200::

    with CallbackServer() as server:
        server.fail(500, 500)            # the next two requests get a 500
        ... reply_to=server.url("/cb") ...
        [request] = server.wait_for(1)

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.threaded_server import ThreadedServer


@dataclass(frozen=True)
class Received:
    """One request the server got."""

    path: str
    headers: dict[str, str]
    body: bytes


class CallbackServer:
    """Records callbacks; ``fail(*statuses)`` scripts the next answers."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._statuses: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        self._http: ThreadedServer | None = None
        self.port = 0
        self.app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])

    def url(self, path: str = "/cb") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail(self, *statuses: int) -> None:
        with self._lock:
            self._statuses.extend(statuses)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The first ``count`` requests, once they arrived (from any thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= count:
                    return self.requests[:count]
            time.sleep(0.005)
        raise TimeoutError(f"{len(self.requests)} callback(s) arrived, wanted {count}")

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.requests.append(
                Received(request.url.path, {k.lower(): v for k, v in request.headers.items()}, body)
            )
            status = self._statuses.popleft() if self._statuses else 200
        return JSONResponse({"received": True}, status_code=status)

    def start(self) -> Self:
        self._http = ThreadedServer(self.app, "callback-server")
        self.port = self._http.start()
        return self

    def stop(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
