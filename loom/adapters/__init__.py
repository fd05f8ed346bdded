"""Adapters: how outside events become RuntimeSignals, and how replies go back."""

from loom.adapters.base import Adapter, Reply
from loom.adapters.cloudevents import CloudEventError, signal_from_cloudevent

__all__ = ["Adapter", "CloudEventError", "Reply", "signal_from_cloudevent"]
