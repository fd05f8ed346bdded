"""One supervised connection to an MCP server, shared by every run that calls it.

A single supervisor task opens the connection (spawning a stdio server or connecting over
Streamable HTTP), lists the tools, keeps the list fresh (on the server's list-changed
notification, and after ``list_ttl``), pings it while idle, and closes it: the SDK's
context managers are entered and left in that one task, so no caller ever closes a
connection from another task (which would cancel its opener). A dropped connection or a
dead server is opened again with exponential backoff; calls in flight get a clear error;
a server whose starts keep failing is reported degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import IO, Any, Literal

import mcp.types as mcp_types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

from loom import metrics
from loom.tools import mcp_spawn
from loom.tools.mcp_config import MCPServerConfig
from loom.tools.mcp_errors import MCPCallTimeoutError, MCPUnavailableError

__all__ = ["MCPCallTimeoutError", "MCPConnection", "MCPUnavailableError"]

logger = logging.getLogger("loom.mcp")

State = Literal["idle", "connecting", "ready", "backoff", "closed"]
_BACKOFF_BASE = 0.2
_BACKOFF_MAX = 30.0


class _WatchedDispatcher(JSONRPCDispatcher):
    """The SDK's JSON-RPC dispatcher, telling the supervisor when its receive loop ends
    (the server closed its end, or died)."""

    on_end: Callable[[], None] = staticmethod(lambda: None)

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        finally:
            self.on_end()


class MCPConnection:
    """The connection to one server for one scope (the worker, or one session)."""

    def __init__(self, config: MCPServerConfig, *, label: str | None = None) -> None:
        self.config = config
        self.label = label or config.name
        self.state: State = "idle"
        self.tools: tuple[mcp_types.Tool, ...] = ()
        self.revision = 0
        """Bumped each time ``tools`` changes; who caches something built from the list
        rebuilds it when this moves."""
        self.failures = 0
        """Failed starts (or lost connections) in a row since the last good connection."""
        self.last_error: str | None = None
        self.last_used = time.monotonic()
        self._session: ClientSession | None = None
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._wake = asyncio.Event()
        self._attempted = asyncio.Event()
        self._stop = False
        self._lost = False
        self._refresh = False
        self._opened = False
        self.http_status: str | None = None
        """The last refused HTTP request's status (``url=`` servers), for error messages."""
        self._task: asyncio.Task[None] | None = None
        self._listed_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def degraded(self) -> bool:
        return self.failures >= self.config.degrade_after

    def start(self) -> None:
        """Start the supervisor (once); the connection opens in the background."""
        if self._task is None and not self._stopping():
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"loom-mcp-{self.label}"
            )

    async def ready(self, timeout: float | None = None) -> ClientSession:
        """The open session, starting the server first if needed; raises
        ``MCPUnavailableError`` naming why when it cannot be had within ``timeout``."""
        session = self._session
        if session is not None:
            return session
        if self._stopping():
            raise MCPUnavailableError(f"MCP server {self.label!r} is closed")
        if self.degraded and self.state == "backoff":
            raise MCPUnavailableError(self._unavailable())
        self.start()
        deadline = time.monotonic() + (timeout or self.config.startup_timeout)
        while self._session is None:
            self._attempted.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise MCPUnavailableError(self._unavailable())
            try:
                async with asyncio.timeout(left):
                    await self._attempted.wait()
            except TimeoutError:
                raise MCPUnavailableError(self._unavailable()) from None
            if self._session is None and self.last_error is not None:
                raise MCPUnavailableError(self._unavailable())
        return self._session

    def _unavailable(self) -> str:
        why = self.last_error or "it did not start in time"
        return f"MCP server {self.label!r} is unavailable: {why}"

    async def aclose(self, timeout: float = 10.0) -> None:
        """Close the connection (and stop a stdio server) within ``timeout`` seconds."""
        self._stop = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                logger.warning("MCP server %s did not close in %.1fs", self.label, timeout)
                task.cancel()
        self.state = "closed"
        metrics.mcp_server_state(self.config.name, ready=False, degraded=False)

    def _stopping(self) -> bool:
        return self._stop

    def _is_lost(self) -> bool:
        return self._lost

    # -- calls -------------------------------------------------------------------------
    async def call(
        self, tool: str, arguments: dict[str, Any], timeout: float | None = None
    ) -> mcp_types.CallToolResult:
        """Call ``tool`` on the server; at most ``max_in_flight`` calls run at once."""
        self.last_used = time.monotonic()
        session = await self.ready()
        timeout = timeout or self.config.call_timeout
        async with self._slots:
            try:
                return await session.call_tool(tool, arguments, read_timeout_seconds=timeout)
            except MCPError as exc:
                if exc.code == mcp_types.CONNECTION_CLOSED:
                    self._connection_lost(session)
                    raise MCPUnavailableError(
                        f"MCP server {self.label!r}: the connection closed during the call "
                        f"of {tool!r}; the server is being restarted"
                    ) from None
                if exc.code == mcp_types.REQUEST_TIMEOUT:
                    raise MCPCallTimeoutError(
                        f"MCP server {self.label!r} did not answer {tool!r} within {timeout:g}s"
                    ) from None
                raise

    def refresh_tools(self) -> None:
        """Fetch the tool list again, in the supervisor, soon (not on the caller's path)."""
        self._refresh = True
        self._wake.set()

    def _connection_lost(self, session: ClientSession | None = None) -> None:
        if session is not None and session is not self._session:
            return  # an older connection, already replaced
        self._session = None  # new calls wait for the restart instead of failing on it
        self._lost = True
        self._wake.set()

    # -- the supervisor ----------------------------------------------------------------
    async def _supervise(self) -> None:
        while not self._stopping():
            self.state = "connecting"
            self._opened = False
            try:
                await self._serve_once()
            except Exception as exc:
                self.last_error = _describe(exc, self.config)
                if self.http_status and not self._opened:
                    self.last_error += f": {self.http_status}"
                logger.warning("MCP server %s: %s", self.label, self.last_error)
            finally:
                self._session = None
                if not self._opened:
                    self._attempted.set()  # callers waiting for this start learn it failed
            if self._stopping():
                break
            self.failures += 1
            metrics.mcp_restarted(self.config.name)
            metrics.mcp_server_state(self.config.name, ready=False, degraded=self.degraded)
            self.state = "backoff"
            # A connection that was good is opened again at once; failed starts back off.
            delay = (
                0.0 if self._opened else min(_BACKOFF_BASE * 2 ** (self.failures - 1), _BACKOFF_MAX)
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * random.uniform(0.8, 1.2)):
                    self._wake.clear()
                    while not self._stopping():
                        await self._wake.wait()
                        self._wake.clear()
        self.state = "closed"

    async def _serve_once(self) -> None:
        self._lost = self._refresh = False
        self.http_status = None
        async with AsyncExitStack() as stack:
            dispatcher = await self._open(stack)
            # A dispatcher ends inside this exit stack, before the next one opens, so it
            # can only ever mark its own connection lost.
            dispatcher.on_end = self._connection_lost
            session = await stack.enter_async_context(
                ClientSession(dispatcher=dispatcher, message_handler=self._on_message)
            )
            async with asyncio.timeout(self.config.startup_timeout):
                await session.initialize()
                await self._list_tools(session)
            self._session, self.failures, self.last_error = session, 0, None
            self._opened = True
            self.state = "ready"
            metrics.mcp_server_state(self.config.name, ready=True, degraded=False)
            logger.info("MCP server %s ready: %d tools", self.label, len(self.tools))
            self._attempted.set()
            await self._watch(session)

    async def _watch(self, session: ClientSession) -> None:
        """Until stopped or lost: refresh the list when asked or stale, ping when idle."""
        config = self.config
        while not self._stopping():
            self._wake.clear()
            if not (self._lost or self._refresh):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(config.ping_interval):
                        await self._wake.wait()
            if self._stopping():
                return
            if self._is_lost():
                raise MCPUnavailableError("the connection closed")
            stale = time.monotonic() - self._listed_at > config.list_ttl
            if self._refresh or stale:
                self._refresh = False
                async with asyncio.timeout(config.startup_timeout):
                    await self._list_tools(session)
            elif not self._wake.is_set():
                async with asyncio.timeout(config.startup_timeout):
                    await session.send_ping()

    async def _list_tools(self, session: ClientSession) -> None:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        while True:
            params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._listed_at = time.monotonic()
        if tuple(tools) != self.tools:
            self.tools = tuple(tools)
            self.revision += 1

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self.refresh_tools()
        elif isinstance(message, Exception):
            logger.warning("MCP server %s: transport error: %s", self.label, message)

    async def _open(self, stack: AsyncExitStack) -> _WatchedDispatcher:
        config = self.config
        if config.url is not None:
            client = create_mcp_http_client(headers=dict(config.headers) or None)
            # The SDK reports a refused request without its status; keep it for the error.
            client.event_hooks = {"response": [self._note_status]}
            await stack.enter_async_context(client)
            streams = await stack.enter_async_context(
                streamable_http_client(config.url, http_client=client)
            )
        else:
            streams = await self._spawn(stack)
        return _WatchedDispatcher(*streams)

    async def _note_status(self, response: Any) -> None:
        if response.status_code >= 400:
            self.http_status = f"HTTP {response.status_code} {response.reason_phrase}".strip()

    async def _spawn(self, stack: AsyncExitStack) -> Any:
        config = self.config
        assert config.command is not None
        env = get_default_environment() | dict(config.env)
        if shutil.which(config.command, path=env.get("PATH")) is None:
            path = env.get("PATH")
            raise MCPUnavailableError(f"command {config.command!r} not found (PATH={path})")
        params = StdioServerParameters(
            command=sys.executable,
            # -I -S: the launcher needs the standard library only, and starts fast.
            args=["-I", "-S", mcp_spawn.__file__, str(os.getpid()), config.command, *config.args],
            env=env,
            cwd=config.cwd,
        )
        read_fd, write_fd = os.pipe()
        errlog = os.fdopen(write_fd, "w")
        try:
            streams = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        finally:
            errlog.close()  # the child holds its own copy; EOF comes when it exits
        task = asyncio.get_running_loop().create_task(
            _log_stderr(os.fdopen(read_fd, "rb"), self.label), name=f"loom-mcp-stderr-{self.label}"
        )
        stack.callback(_forget, task)
        return streams


async def _log_stderr(pipe: IO[bytes], label: str) -> None:
    """The server's stderr, line by line, into Loom's log under ``loom.mcp``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 16)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line past the limit: log what was read, go on
                line = await reader.read(1 << 16)
            if not line:
                return
            logger.info("MCP server %s: %s", label, line.decode(errors="replace").rstrip())
    finally:
        transport.close()


def _forget(task: asyncio.Task[None]) -> None:
    """Let the stderr reader finish on its own: it ends at EOF once the server is gone."""
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _describe(exc: BaseException, config: MCPServerConfig) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {config.startup_timeout:g}s (startup_timeout)"
    if isinstance(exc, MCPError):
        return f"{exc.message} ({config.describe()})"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e, config) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, MCPUnavailableError) else str(exc)
