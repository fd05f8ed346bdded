"""A private redis-server on a port of its own, for tests that kill, freeze or restart it
(the shared Redis other tests use keeps running). Data lives in a temporary directory,
persisted with AOF (``appendfsync always``), so a restart keeps what was written."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

PORTS = range(16500, 16550)
"""This suite's ports for private Redis servers."""


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port for a private Redis")


class PrivateRedis:
    """``start``, ``kill`` (-9), ``freeze`` (SIGSTOP), ``thaw`` (SIGCONT), ``stop``."""

    def __init__(
        self, directory: Path, port: int | None = None, *, extra: tuple[str, ...] = ()
    ) -> None:
        self.directory = directory
        self.chosen = port is None
        """Whether the port was picked here (and can be picked again if it is taken)."""
        self.port = port or free_port()
        self.extra = extra
        """More arguments: ``("--replicaof", host, port)`` for a replica."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--daemonize", "no", *self.extra,
        ]  # fmt: skip

    def start(self) -> PrivateRedis:
        """Start the server and wait until it answers. Another test run on this machine
        can take a port between ``free_port``'s probe and the server's bind: a server
        that could not bind exits, and the one answering is then not ours (its process id
        says so), so a port this class chose is chosen again."""
        for _ in range(5):
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._answers():
                return self
            self.process.kill()
            self.process.wait(5)
            if not self.chosen:
                break
            self.port = free_port()
        raise RuntimeError(f"the private Redis on port {self.port} did not start")

    def _answers(self) -> bool:
        """True once this object's server answers on its port (False if it exited)."""
        assert self.process is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.2)
            try:
                if client.info("server")["process_id"] == self.process.pid:
                    return True
            except redis.exceptions.RedisError:
                pass
            finally:
                client.close()
            time.sleep(0.05)
        return False

    def _signal(self, number: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, number)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(5)

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()
        self.kill()


class PrivateSentinel(PrivateRedis):
    """A Redis Sentinel watching ``primary`` as service ``service``, quick to fail over."""

    def __init__(self, directory: Path, primary: PrivateRedis, service: str = "loom") -> None:
        super().__init__(directory)
        self.primary, self.service = primary, service

    def command(self) -> list[str]:
        config = self.directory / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 5000\n"
        )
        return ["redis-server", str(config), "--sentinel"]
