"""A real MCP server for tests, written with the ``mcp`` package (MCPServer).

Run over stdio: ``python -m tests.fakes.mcp_server``; over Streamable HTTP:
``python -m tests.fakes.mcp_server --http PORT --token TOKEN``. It counts the
``tools/list`` requests it answers (the ``count_lists`` tool reports them) and writes its
pid to ``$MCP_FAKE_PIDFILE`` (appended, one line per start) when that is set.

``MCP_FAKE_STUBBORN=1`` makes it a server that does not exit when its stdin closes, and
that starts a child of its own (``sleep``, its pid in the pid file too): what a careless
server (or ``npx`` in front of one) looks like to the process that must not leave it behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import Tool, ToolAnnotations

server: MCPServer[Any] = MCPServer("loom-fake")
_lists = 0
_original_list = server.list_tools


async def _counting_list() -> list[Tool]:
    global _lists
    _lists += 1
    return await _original_list()


# MCPServer answers tools/list through this method; counting here counts every listing.
server.list_tools = _counting_list  # type: ignore[method-assign]


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


_active = 0
_most_active = 0


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then say how long."""
    global _active, _most_active
    _active += 1
    _most_active = max(_most_active, _active)
    try:
        await asyncio.sleep(seconds)
    finally:
        _active -= 1
    return f"slept {seconds}"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def most_active() -> int:
    """The most ``sleep`` calls this process ran at once."""
    return _most_active


@server.tool()
def crash() -> str:
    """Kill this server process."""
    os._exit(3)


@server.tool(annotations=ToolAnnotations(read_only_hint=True, destructive_hint=True))
def drop_table(table: str) -> str:
    """Claims read-only and destructive at once: only the destructive hint may count."""
    return f"dropped {table}"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def big(size: int) -> str:
    """Return ``size`` characters."""
    return "x" * size


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def count_lists() -> int:
    """How many tools/list requests this process answered."""
    return _lists


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def whoami() -> dict[str, Any]:
    """This process: pid and selected environment."""
    return {"pid": os.getpid(), "env": sorted(os.environ), "cwd": os.getcwd()}


@server.tool()
def fail(message: str) -> str:
    """Raise an error with ``message``."""
    raise ToolError(message)


@server.tool()
async def add_tool(name: str, ctx: Context[Any, Any]) -> str:
    """Add a tool called ``name`` (it echoes its input) and tell the client."""

    def echo(text: str) -> str:
        return text

    server.add_tool(echo, name=name, description=f"echo, added as {name}")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int)
    parser.add_argument("--token")
    args = parser.parse_args()
    pidfile = os.environ.get("MCP_FAKE_PIDFILE")
    stubborn = os.environ.get("MCP_FAKE_STUBBORN") == "1"
    pids = [os.getpid()]
    if stubborn:
        pids.append(subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL).pid)
    if pidfile:
        with open(pidfile, "a") as f:
            f.write("".join(f"{pid}\n" for pid in pids))
    print(f"fake MCP server {os.getpid()} starting", file=sys.stderr, flush=True)
    if args.http is None:
        server.run()
        if stubborn:
            time.sleep(300)
        return
    import uvicorn
    from starlette.types import ASGIApp, Receive, Scope, Send

    app = server.streamable_http_app()
    token = args.token

    def bearer(inner: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                if headers.get(b"authorization") != f"Bearer {token}".encode():
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await inner(scope, receive, send)

        return guarded

    uvicorn.run(bearer(app), host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
