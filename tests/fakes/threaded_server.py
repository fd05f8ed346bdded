"""An ASGI app served by uvicorn on a free loopback port from a daemon thread: the one way
the tests' fake servers (LLM providers, Slack's Web API, callback receivers) run."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any

import uvicorn

_POLL = 0.005
_SHUTDOWN_GRACE = 1.0


class _QuickServer(uvicorn.Server):
    """``uvicorn.Server`` minus its fixed 0.1 s sleeps: notices ``should_exit`` within a few
    milliseconds and shuts down as soon as connections are gone (~0.17 s -> ~0.01 s per test).
    In-flight replies get ``_SHUTDOWN_GRACE`` seconds, then their tasks are cancelled."""

    _exit_loop: asyncio.AbstractEventLoop | None = None
    _exit_event: asyncio.Event | None = None

    def request_exit(self) -> None:
        """Ask the serving thread to shut down (callable from any thread)."""
        self.should_exit = True  # set before reading the event: see main_loop
        loop, event = self._exit_loop, self._exit_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                loop.call_soon_threadsafe(event.set)

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default response headers (date, server)
        self._exit_loop, self._exit_event = asyncio.get_running_loop(), asyncio.Event()
        if not self.should_exit:  # else request_exit ran before the event existed
            await self._exit_event.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for listener in self.servers:
            listener.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # closes idle keep-alive connections, ends busy ones after reply
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SHUTDOWN_GRACE
        state = self.server_state
        while (state.connections or state.tasks) and not self.force_exit:
            if loop.time() > deadline:
                break
            await asyncio.sleep(_POLL)
        for task in list(state.tasks):
            task.cancel()
        for listener in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), _SHUTDOWN_GRACE)


class ThreadedServer:
    """``app`` on ``host`` at a free port, served from a daemon thread named ``name``."""

    def __init__(self, app: Any, name: str, host: str = "127.0.0.1") -> None:
        self.app = app
        self.name = name
        self.host = host
        self.port = 0
        self._server: _QuickServer | None = None
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> int:
        """Bind, serve, and return the port once listening."""
        # IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted sockets (no 40 ms ACK stalls).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            ws="none",
        )
        server = self._server = _QuickServer(config)
        self.thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"{self.name}:{self.port}",
            daemon=True,
        )
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self.thread.is_alive():
                sock.close()
                raise RuntimeError(f"{self.name} thread died during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start in time")
            time.sleep(_POLL)
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (in-flight replies get about a second to finish) and join the thread."""
        server, thread = self._server, self.thread
        if server is None or thread is None:
            return
        server.request_exit()
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{self.name} thread did not stop")
        self._server = self.thread = None
