"""The daemon: settings, roles, lifecycle and the ``loom`` command line.

``from loom.daemon import Daemon, Settings``. Imported lazily, so the command line starts
fast and ``import loom`` never pulls in the HTTP server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.daemon.app import Daemon
    from loom.daemon.settings import Settings

__all__ = ["Daemon", "Settings"]


def __getattr__(name: str) -> Any:
    if name == "Daemon":
        from loom.daemon.app import Daemon

        return Daemon
    if name == "Settings":
        from loom.daemon.settings import Settings

        return Settings
    raise AttributeError(f"module 'loom.daemon' has no attribute {name!r}")
