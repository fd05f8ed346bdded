"""A private RabbitMQ node on ports of its own, for tests that kill and restart it (the
shared broker other tests use keeps running). Its data directory outlives a restart, so
quorum queues and their messages come back with it; management is off."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
"""The server script without the system wrapper that switches to the rabbitmq user."""
PORTS = range(16550, 16600, 2)
"""This suite's ports: the AMQP port and, one above it, the Erlang distribution port."""


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PrivateRabbitMQ:
    """``start`` (waits until AMQP answers), ``kill`` (-9, the whole node), ``stop``."""

    def __init__(self, directory: Path) -> None:
        if not SERVER.exists():
            pytest.skip(f"RabbitMQ is not installed ({SERVER})")
        self.directory = directory
        free = [p for p in PORTS if _free(p) and _free(p + 1)]
        if not free:
            pytest.skip("no free ports for a private RabbitMQ node")
        self.port = free[0]
        self.node = f"loomchaos{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        for part in ("mnesia", "log", "home"):
            (directory / part).mkdir(parents=True, exist_ok=True)
        (directory / "plugins").write_text("[].\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 60.0) -> PrivateRabbitMQ:
        d = self.directory
        env = os.environ | {
            "HOME": str(d / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 1),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "plugins"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "none"),
            # A node killed on purpose may dump its state: there, not in the checkout.
            "ERL_CRASH_DUMP": str(d / "erl_crash.dump"),
        }
        with (d / "server.log").open("ab") as out:
            self.process = subprocess.Popen(
                [str(SERVER)], env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.node} exited; see {d / 'server.log'}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            time.sleep(0.1)
        raise RuntimeError(f"RabbitMQ node {self.node} did not start within {timeout:g}s")

    def kill(self) -> None:
        """kill -9 of the node's whole process group (the script, Erlang, its helpers)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        self.kill()
