"""Probes: is a service up? The heartbeat runs them and reports their transitions.

``HttpProbe("api", "http://api:8080/healthz")`` is up when a GET answers the expected
status in time; ``TcpProbe("db", "db", 5432)`` when a TCP connection opens in time. A probe
never raises: every failure is a down result that says what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

PROBE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's answer: ``up`` or not, with what was seen and how long it took."""

    name: str
    up: bool
    detail: str
    latency: float
    target: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "up": self.up,
            "detail": self.detail,
            "latency": round(self.latency, 4),
            "target": self.target,
        }


class Probe(ABC):
    """A named check of one service, with a timeout."""

    def __init__(self, name: str, timeout: float) -> None:
        if not PROBE_NAME.match(name):
            raise ValueError(f"probe name {name!r} must be 1-64 letters, digits or _.:-")
        if timeout <= 0:
            raise ValueError(f"probe {name!r}: timeout must be positive")
        self.name = name
        self.timeout = timeout

    @property
    @abstractmethod
    def target(self) -> str:
        """What is probed, for people (a URL, host:port)."""

    @abstractmethod
    async def _attempt(self) -> tuple[bool, str]:
        """Probe once: (up, detail). May raise; ``check`` turns that into a down result."""

    async def check(self) -> ProbeResult:
        """Probe now; never raises."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                up, detail = await self._attempt()
        except TimeoutError:
            up, detail = False, f"no answer within {self.timeout:g}s"
        except Exception as problem:  # any failure to reach the service is "down"
            up, detail = False, f"{type(problem).__name__}: {problem}".rstrip(": ")
        return ProbeResult(self.name, up, detail, time.perf_counter() - started, self.target)

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Release what the probe keeps between checks (a client); it may check again."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.target!r})"


class HttpProbe(Probe):
    """Up when ``GET url`` answers ``expect_status`` within ``timeout`` seconds (redirects
    are not followed: a 302 is what the service said)."""

    def __init__(self, name: str, url: str, expect_status: int = 200, timeout: float = 5.0) -> None:
        super().__init__(name, timeout)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"probe {name!r}: url must be http:// or https://, not {url!r}")
        if not 100 <= expect_status <= 599:
            raise ValueError(f"probe {name!r}: expect_status {expect_status} is not an HTTP status")
        self.url = url
        self.expect_status = expect_status
        self._client: httpx.AsyncClient | None = None

    @property
    def target(self) -> str:
        return self.url

    async def _attempt(self) -> tuple[bool, str]:
        import httpx

        if self._client is None or self._client.is_closed:
            # One client for every check: building one makes an SSL context, which blocks
            # the event loop for tens of milliseconds. Still a fresh connection each time
            # (no keep-alive): a pooled one could hide a server that stopped accepting.
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        response = await self._client.get(self.url)
        status = response.status_code
        if status == self.expect_status:
            return True, f"HTTP {status}"
        return False, f"HTTP {status}, expected {self.expect_status}"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class TcpProbe(Probe):
    """Up when a TCP connection to ``host:port`` opens within ``timeout`` seconds."""

    def __init__(self, name: str, host: str, port: int, timeout: float = 5.0) -> None:
        super().__init__(name, timeout)
        if not host:
            raise ValueError(f"probe {name!r}: host is empty")
        if not 0 < port < 65536:
            raise ValueError(f"probe {name!r}: port {port} is out of range 1-65535")
        self.host = host
        self.port = port

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def _attempt(self) -> tuple[bool, str]:
        _, writer = await asyncio.open_connection(self.host, self.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, "connected"


__all__ = ["HttpProbe", "Probe", "ProbeResult", "TcpProbe"]
