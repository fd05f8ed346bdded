"""MCP over Streamable HTTP with a bearer token, against the same real fake server."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loom import Capability
from loom.tools.mcp_connection import MCPUnavailableError
from tests.test_mcp import agent_with, call, tc

ROOT = Path(__file__).resolve().parent.parent
PORT = 16851
TOKEN = "mcp-http-test-token"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    args = [sys.executable, "-m", "tests.fakes.mcp_server", "--http", str(PORT), "--token", TOKEN]
    proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{PORT}/mcp"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, timeout=0.5)
                break
            if proc.poll() is not None:
                pytest.fail("the MCP HTTP server exited")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def http(url: str, token: str = TOKEN, **options: object) -> Capability:
    return Capability.mcp(
        "fake",
        url=url,
        headers={"Authorization": f"Bearer {token}"},
        require_approval=False,
        **options,  # type: ignore[arg-type]
    )


async def test_calls_go_over_streamable_http_with_the_token(http_server: str) -> None:
    agent, script = agent_with(http(http_server))
    async with agent:
        (added, lists) = await call(agent, script, "a", tc("add", a=1, b=2), tc("count_lists"))
        (again,) = await call(agent, script, "b", tc("count_lists"))
        assert added == {"result": 3}
        assert lists == again  # no tools/list on the second run


async def test_a_wrong_token_is_a_clear_error(http_server: str) -> None:
    agent, _ = agent_with(http(http_server, token="wrong", connect=True, startup_timeout=5))
    with pytest.raises(MCPUnavailableError, match="fake") as raised:
        await agent.start()
    assert "401" in str(raised.value)
    assert "wrong" not in str(raised.value)  # the token is never shown
    await agent.aclose()


async def test_the_timeout_leaves_the_http_connection_usable(http_server: str) -> None:
    agent, script = agent_with(http(http_server, call_timeout=0.3))
    async with agent:
        (slow,) = await call(agent, script, "a", tc("sleep", seconds=2))
        assert "did not answer 'sleep' within 0.3s" in slow
        await asyncio.sleep(0)
        (added,) = await call(agent, script, "a", tc("add", a=2, b=2))
        assert added == {"result": 4}
