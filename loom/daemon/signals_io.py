"""Deprecated path: the broker encodings live in ``loom.wire``."""

from loom.wire import (
    PendingSignal,
    decision_record,
    parse_work,
    publish_signal,
    publish_work,
    signal_routing_key,
)

__all__ = [
    "PendingSignal",
    "decision_record",
    "parse_work",
    "publish_signal",
    "publish_work",
    "signal_routing_key",
]
