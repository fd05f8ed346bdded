"""Adapters: how outside events become RuntimeSignals (CloudEvents today; Slack, webhooks,
cron and heartbeat build on the same path)."""

from loom.adapters.cloudevents import CloudEventError, signal_from_cloudevent

__all__ = ["CloudEventError", "signal_from_cloudevent"]
