"""Run an MCP server command so it cannot outlive the Loom process that started it.

``python -m loom.tools.mcp_spawn PARENT_PID COMMAND [ARGS...]`` is what Loom spawns for a
stdio server. The MCP SDK starts it in a new process group; this launcher asks Linux to
send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``: it fires even when the parent
is killed with SIGKILL), runs the server as its child in the same group, and on that
signal (or any SIGTERM/SIGINT/SIGHUP) stops the whole group: the server and anything the
server started (``npx`` spawning ``node``). Its own exit code is the server's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

_PR_SET_PDEATHSIG = 1
_GRACE = 2.0


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return  # elsewhere the SDK's own group kill on close is all there is
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _stop_group(child: subprocess.Popen[bytes]) -> None:
    group = os.getpgrp()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # the group signal below reaches us too
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _GRACE
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # Whatever is left in the group (the server's own children too) goes now.
    os.killpg(group, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m loom.tools.mcp_spawn PARENT_PID COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[1:]
    _die_with_parent()
    if os.getppid() != parent:
        return 1  # the parent died before the death signal was armed
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"cannot start MCP server {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _stop_group(child)
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
