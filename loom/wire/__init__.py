"""The broker wire: Loom's topology (``topology``) and how signals, work notices and pending
records are encoded on it (``encoding``)."""

from __future__ import annotations

from loom.wire.encoding import (
    PendingSignal,
    decision_record,
    decision_view,
    parse_work,
    publish_signal,
    publish_work,
    signal_routing_key,
)
from loom.wire.topology import (
    ATTENTION_QUEUE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EXCHANGES,
    QUEUES,
    REPLIES_EXCHANGE,
    REPLIES_QUEUE,
    REPLY_ROUTING_KEY,
    SIGNALS_EXCHANGE,
    TOPOLOGY,
    WORK_EXCHANGE,
    WORK_QUEUE,
    WORK_QUEUES,
    WORK_ROUTING_KEY,
    broker_from_url,
)

__all__ = [
    "ATTENTION_QUEUE",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "EXCHANGES",
    "QUEUES",
    "REPLIES_EXCHANGE",
    "REPLIES_QUEUE",
    "REPLY_ROUTING_KEY",
    "SIGNALS_EXCHANGE",
    "TOPOLOGY",
    "WORK_EXCHANGE",
    "WORK_QUEUE",
    "WORK_QUEUES",
    "WORK_ROUTING_KEY",
    "PendingSignal",
    "broker_from_url",
    "decision_record",
    "decision_view",
    "parse_work",
    "publish_signal",
    "publish_work",
    "signal_routing_key",
]
