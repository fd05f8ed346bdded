"""The operator console at ``/console``: sessions, decisions, runs, approvals, dead letters
and the processes, rendered on the server, live through server-sent events.

``console_routes`` is what the gateway mounts; ``ConsoleAuth`` who may use it (the API
token). See docs/console.md.
"""

from __future__ import annotations

from loom.daemon.console.auth import ConsoleAuth
from loom.daemon.console.routes import console_routes

__all__ = ["ConsoleAuth", "console_routes"]
