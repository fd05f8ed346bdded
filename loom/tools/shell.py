"""The shell capability's tool: one command line, run by ``/bin/sh -c`` (the model writes
shell, pipes included), with no stdin, a scrubbed environment, its own process group, a
time limit, and output kept as head and tail within a byte cap.

Whatever ends the call (its timeout, the tool timeout's cancellation, the run's interrupt,
the command finishing), the whole process group is sent SIGTERM, then SIGKILL after a
grace period: nothing the command started in its group outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom.core.governance import ToolCallInfo
from loom.tools.context import ToolContext
from loom.tools.tool import Tool

_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|SIGNATURE|DSN",
    re.IGNORECASE,
)
_PASSWORD_IN_URL = re.compile(r"://[^/@\s:]*:[^/@\s]+@")
# A command with any of these is never exempt from approval by an `allow` pattern: it could
# chain, substitute or redirect past what the pattern meant.
_SHELL_SYNTAX = re.compile(r"[;&|`$<>(){}\n\r\\*?\[\]~!#]")
_CHUNK = 64 * 1024
_GRACE = 2.0
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class ShellOptions:
    require_approval: bool = True
    timeout: float = 60.0
    max_output_bytes: int = 64 * 1024
    allow: tuple[str, ...] = ()
    """Regular expressions; a command one of them matches whole (and that has no shell
    syntax beyond plain words) runs without approval."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables added to the scrubbed environment (yours, so not scrubbed)."""


def scrubbed_environment(
    source: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``source`` without ``LOOM_*`` and anything whose name looks like a credential
    (key, token, secret, password, auth, cookie, session...) or whose value holds a URL
    with a password; then ``extra`` on top."""
    env = {
        name: value
        for name, value in source.items()
        if not name.upper().startswith("LOOM_")
        and not _SECRET_NAME.search(name)
        and not _PASSWORD_IN_URL.search(value)
    }
    env.update(extra or {})
    return env


class OutputBuffer:
    """The first and last ``cap / 2`` bytes of a stream, and how much was dropped between."""

    def __init__(self, cap: int) -> None:
        self.head_cap = cap - cap // 2
        self.tail_cap = cap // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_cap:
            self.tail += chunk
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {dropped} bytes of output omitted ...]\n".encode() if dropped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", errors="replace")


class Shell:
    """Runs commands for one shell capability."""

    def __init__(self, cwd: str | os.PathLike[str], options: ShellOptions | None = None) -> None:
        path = Path(cwd).expanduser()
        if not path.is_dir():
            raise ValueError(f"shell cwd {str(path)!r} does not exist or is not a directory")
        self.cwd = str(path.resolve())
        self.options = options or ShellOptions()
        if self.options.timeout <= 0 or self.options.max_output_bytes < 2:
            raise ValueError("shell timeout must be > 0 and max_output_bytes >= 2")
        try:
            self._allow = tuple(re.compile(p) for p in self.options.allow)
        except re.error as exc:
            raise ValueError(f"shell allow pattern is not a regular expression: {exc}") from None

    def needs_approval(self, call: ToolCallInfo) -> bool:
        """The approval rule: every command, unless ``allow`` exempts it."""
        if not self.options.require_approval:
            return False
        command = call.arguments.get("command")
        return not (isinstance(command, str) and self.allowed(command))

    def allowed(self, command: str) -> bool:
        if _SHELL_SYNTAX.search(command):
            return False
        return any(pattern.fullmatch(command.strip()) for pattern in self._allow)

    async def run(self, command: str, context: ToolContext | None = None) -> str:
        if not command.strip():
            raise ValueError("empty command")
        if "\x00" in command:
            raise ValueError("the command holds a NUL character")
        buffer = OutputBuffer(self.options.max_output_bytes)
        process = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.cwd,
            env=scrubbed_environment(os.environ, self.options.env),
            start_new_session=True,
        )
        ended = "exit code"
        reader = asyncio.ensure_future(_drain(process, buffer))
        try:
            deadline = time.monotonic() + self.options.timeout
            while process.returncode is None:
                if context is not None and context.interrupted():
                    ended = "interrupted; exit code"
                    break
                if time.monotonic() >= deadline:
                    ended = f"timed out after {self.options.timeout:g}s; exit code"
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(process.wait()), _POLL)
        finally:
            await _end_group(process)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, _GRACE)
        return f"{ended} {process.returncode}\n{buffer.text()}"

    def tool(self) -> Tool[..., Any]:
        shell = self

        async def run_command(command: str, context: ToolContext | None = None) -> str:
            """Run a shell command line (``/bin/sh -c``) and answer with its exit code and
            output (stdout and stderr together; long output keeps its start and end).

            Args:
                command: The exact command line to run.
            """
            return await shell.run(command, context)

        rule = self.needs_approval if self.options.require_approval else False
        return Tool(run_command, destructive=True, requires_approval=rule)


async def _drain(process: asyncio.subprocess.Process, buffer: OutputBuffer) -> None:
    assert process.stdout is not None
    while chunk := await process.stdout.read(_CHUNK):
        buffer.add(chunk)


async def _end_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the command's whole process group, SIGKILL to what is left after the
    grace period. Runs whatever ended the call, cancellation included."""
    group = process.pid  # start_new_session: the shell leads its own group
    if not _signal_group(group, signal.SIGTERM):
        return
    try:
        deadline = time.monotonic() + _GRACE
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), _GRACE)
        # Processes of the group that the command started are not our children: nothing
        # to wait on but the group itself, so look every _POLL seconds.
        for _ in range(int(_GRACE / _POLL)):
            if time.monotonic() >= deadline or not _signal_group(group, 0):
                break
            await asyncio.sleep(_POLL)
    finally:
        _signal_group(group, signal.SIGKILL)
        if process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), _GRACE)


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when no process is left in it."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


__all__ = ["OutputBuffer", "Shell", "ShellOptions", "scrubbed_environment"]
