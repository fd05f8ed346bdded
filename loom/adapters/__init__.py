"""Adapters: how outside events become RuntimeSignals, and how replies go back.

``from loom.adapters import Slack``. Each name is imported on first use, so reading the
settings (which imports ``loom.adapters.registry``) does not load every adapter.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.adapters.alertmanager import Alertmanager
    from loom.adapters.callback import Callbacks
    from loom.adapters.cron import Cron
    from loom.adapters.github import GitHub
    from loom.adapters.heartbeat import Heartbeat
    from loom.adapters.probes import HttpProbe, TcpProbe
    from loom.adapters.slack import Slack
    from loom.adapters.webhook import Webhook
    from loom.intake.adapter import Adapter
    from loom.intake.cloudevents import CloudEventError, signal_from_cloudevent
    from loom.intake.context import AdapterContext
    from loom.intake.replies import Reply

_WHERE = {
    "Adapter": "loom.intake.adapter",
    "AdapterContext": "loom.intake.context",
    "Alertmanager": "loom.adapters.alertmanager",
    "Callbacks": "loom.adapters.callback",
    "CloudEventError": "loom.intake.cloudevents",
    "Cron": "loom.adapters.cron",
    "GitHub": "loom.adapters.github",
    "Heartbeat": "loom.adapters.heartbeat",
    "HttpProbe": "loom.adapters.probes",
    "Reply": "loom.intake.replies",
    "Slack": "loom.adapters.slack",
    "TcpProbe": "loom.adapters.probes",
    "Webhook": "loom.adapters.webhook",
    "signal_from_cloudevent": "loom.intake.cloudevents",
}

__all__ = [
    "Adapter",
    "AdapterContext",
    "Alertmanager",
    "Callbacks",
    "CloudEventError",
    "Cron",
    "GitHub",
    "Heartbeat",
    "HttpProbe",
    "Reply",
    "Slack",
    "TcpProbe",
    "Webhook",
    "signal_from_cloudevent",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'loom.adapters' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
