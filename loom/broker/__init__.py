"""The broker: the port (``base``) and its in-memory and RabbitMQ implementations.

A broker is handed the topology it declares (``loom.wire.TOPOLOGY`` for Loom's own).
``RabbitMQBroker`` is imported on first use, so ``import loom.broker`` does not load aio-pika.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loom.broker.base import (
    DEFAULT_DELIVERY_LIMIT,
    MOVED_TO_WIRE,
    ORIGIN_HEADER,
    REASON_HEADER,
    Binding,
    Broker,
    BrokerUnavailable,
    DeadLetter,
    Delivery,
    Handler,
    Message,
    Topology,
    moved_to_wire,
    namespaced,
)
from loom.broker.memory import MemoryBroker

if TYPE_CHECKING:
    from loom.broker.rabbitmq import RabbitMQBroker

__all__ = [
    "DEFAULT_DELIVERY_LIMIT",
    "ORIGIN_HEADER",
    "REASON_HEADER",
    "Binding",
    "Broker",
    "BrokerUnavailable",
    "DeadLetter",
    "Delivery",
    "Handler",
    "MemoryBroker",
    "Message",
    "RabbitMQBroker",
    "Topology",
    "broker_from_url",
    "namespaced",
]


def broker_from_url(
    url: str,
    *,
    topology: Topology,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    namespace: str = "",
    publish_timeout: float = 10.0,
) -> Broker:
    """The broker a URL names: ``memory://`` or ``amqp://user:pass@host:5672/vhost``
    (``amqps://`` for TLS), on ``topology``. Not started yet: call ``start()``.
    ``publish_timeout`` bounds how long a publish waits for RabbitMQ's confirmation (across
    a reconnect). ``loom.wire.broker_from_url`` is this with Loom's topology."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryBroker(topology=topology, delivery_limit=delivery_limit, namespace=namespace)
    if scheme in ("amqp", "amqps"):
        from loom.broker.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(
            url,
            topology=topology,
            delivery_limit=delivery_limit,
            namespace=namespace,
            publish_timeout=publish_timeout,
        )
    # The URL itself is not repeated: it may hold a password.
    problem = f"unsupported broker URL scheme {scheme!r}" if scheme else "broker URL has no scheme"
    raise ValueError(f"{problem}: use memory:// or amqp://user:pass@host:5672/vhost")


def __getattr__(name: str) -> Any:
    if name == "RabbitMQBroker":
        from loom.broker.rabbitmq import RabbitMQBroker

        return RabbitMQBroker
    if name in MOVED_TO_WIRE:
        raise moved_to_wire(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
