"""Loom's topology on the broker: its exchanges, queues and bindings, as data.

- exchange ``loom.signals`` (topic) -> quorum queue ``loom.attention`` (binding ``#``): every
  RuntimeSignal, consumed by the attention role;
- exchange ``loom.work`` (direct) -> quorum queue ``loom.work`` (binding ``work``): "this
  session needs a run" notices, consumed by workers;
- exchange ``loom.replies`` (direct) -> quorum queue ``loom.replies`` (binding ``reply``):
  the answers of finished runs on their way back (Slack thread, webhook callback), sent by
  the worker role;
- these queues dead-letter to exchange ``loom.dead`` (fanout) -> queue ``loom.dead-letters``,
  and have a delivery limit, so a message that keeps failing ends there.

The brokers declare whatever topology they are handed; ``broker_from_url`` here hands them
this one.
"""

from __future__ import annotations

from loom import broker as _broker
from loom.broker.base import DEFAULT_DELIVERY_LIMIT, Binding, Broker, Topology

SIGNALS_EXCHANGE = "loom.signals"
ATTENTION_QUEUE = "loom.attention"
WORK_EXCHANGE = "loom.work"
WORK_QUEUE = "loom.work"
WORK_ROUTING_KEY = "work"
REPLIES_EXCHANGE = "loom.replies"
REPLIES_QUEUE = "loom.replies"
REPLY_ROUTING_KEY = "reply"
DEAD_LETTER_EXCHANGE = "loom.dead"
DEAD_LETTER_QUEUE = "loom.dead-letters"

WORK_QUEUES: tuple[str, ...] = (ATTENTION_QUEUE, WORK_QUEUE, REPLIES_QUEUE)
"""The queues that dead-letter to ``loom.dead`` and enforce the delivery limit."""

TOPOLOGY = Topology(
    bindings=(
        Binding(SIGNALS_EXCHANGE, "topic", "#", ATTENTION_QUEUE),
        Binding(WORK_EXCHANGE, "direct", WORK_ROUTING_KEY, WORK_QUEUE),
        Binding(REPLIES_EXCHANGE, "direct", REPLY_ROUTING_KEY, REPLIES_QUEUE),
        Binding(DEAD_LETTER_EXCHANGE, "fanout", "", DEAD_LETTER_QUEUE),
    ),
    dead_letter_exchange=DEAD_LETTER_EXCHANGE,
    dead_letter_queue=DEAD_LETTER_QUEUE,
    limited=WORK_QUEUES,
)
"""Loom's topology, handed to every broker Loom starts."""
EXCHANGES: tuple[str, ...] = TOPOLOGY.exchanges
QUEUES: tuple[str, ...] = TOPOLOGY.queues


def broker_from_url(
    url: str,
    *,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    namespace: str = "",
    publish_timeout: float = 10.0,
    topology: Topology = TOPOLOGY,
) -> Broker:
    """The broker a URL names (see ``loom.broker.broker_from_url``), on Loom's topology."""
    return _broker.broker_from_url(
        url,
        topology=topology,
        delivery_limit=delivery_limit,
        namespace=namespace,
        publish_timeout=publish_timeout,
    )
