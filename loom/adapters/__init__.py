"""Adapters: how outside events become RuntimeSignals, and how replies go back."""

from loom.adapters.alertmanager import Alertmanager
from loom.adapters.base import Adapter, Reply
from loom.adapters.callback import Callbacks
from loom.adapters.cloudevents import CloudEventError, signal_from_cloudevent
from loom.adapters.cron import Cron
from loom.adapters.github import GitHub
from loom.adapters.heartbeat import Heartbeat
from loom.adapters.probes import HttpProbe, TcpProbe
from loom.adapters.slack import Slack
from loom.adapters.webhook import Webhook

__all__ = [
    "Adapter",
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
