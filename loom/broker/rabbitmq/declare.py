"""Declaring a topology on RabbitMQ: durable exchanges, quorum queues and their bindings.

The limited queues get ``x-delivery-limit`` and at-least-once dead-lettering to the
topology's dead-letter exchange. ``delivery_limit`` is the most deliveries a message gets,
so the queue argument is ``delivery_limit - 1`` (RabbitMQ counts *re*deliveries).
"""

from __future__ import annotations

from typing import Any

from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from aiormq.exceptions import ChannelPreconditionFailed

from loom.broker.base import Topology
from loom.broker.rabbitmq.connection import Connection

UNLIMITED = 2**31 - 1
"""The delivery limit of a queue without one (the dead-letter queue): peeking requeues,
which must never drop a letter (RabbitMQ 4 gives quorum queues a default limit of 20)."""


class Declarer:
    """Declares ``topology`` under the connection's namespace, and deletes it again."""

    def __init__(self, connection: Connection, topology: Topology, delivery_limit: int) -> None:
        self.connection = connection
        self.topology = topology
        self.delivery_limit = delivery_limit
        self.exchanges: dict[str, AbstractExchange] = {}
        """The declared exchanges by logical name, for publishing."""

    async def declare(self, channel: AbstractRobustChannel) -> None:
        """Declare everything on ``channel`` (the robust publisher channel: aio-pika declares
        it all again after a reconnect)."""
        name = self.connection.name
        exchanges: dict[str, AbstractExchange] = {}
        try:
            for binding in self.topology.bindings:
                if binding.exchange not in exchanges:
                    exchanges[binding.exchange] = await channel.declare_exchange(
                        name(binding.exchange), binding.exchange_type, durable=True
                    )
                queue = await channel.declare_queue(
                    name(binding.queue), durable=True, arguments=self.arguments(binding.queue)
                )
                await queue.bind(exchanges[binding.exchange], binding.routing_key)
        except ChannelPreconditionFailed as exc:
            raise self.connection.unavailable(
                "the existing topology differs from the one given (delete the queues or use "
                "another namespace)",
                exc,
            ) from exc
        self.exchanges = exchanges

    def arguments(self, queue: str) -> dict[str, Any]:
        """The queue arguments ``queue`` is declared with (a consumer declares it again)."""
        if queue not in self.topology.limited:
            return {"x-queue-type": "quorum", "x-delivery-limit": UNLIMITED}
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit - 1,
            "x-dead-letter-exchange": self.connection.name(self.topology.dead_letter_exchange),
            # At-least-once dead-lettering (RabbitMQ >= 3.10) needs reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def exchange(self, logical: str) -> AbstractExchange:
        """A declared exchange; ``ValueError`` for one the topology does not have."""
        # A declared one is the topology's (the check below builds a tuple: not per publish).
        if logical not in self.exchanges and logical not in self.topology.exchanges:
            known = ", ".join(self.topology.exchanges)
            raise ValueError(f"unknown exchange {logical!r}; known: {known}")
        self.connection.publisher()  # raises BrokerUnavailable when not started
        return self.exchanges[logical]

    async def delete(self) -> None:
        """Delete the namespace's queues and exchanges (test teardown). Needs a namespace."""
        if not self.connection.namespace:
            raise ValueError("refusing to delete the un-namespaced production topology")
        channel = await self.connection.admin().get_underlay_channel()
        for queue in self.topology.queues:
            await channel.queue_delete(self.connection.name(queue))
        for exchange in self.topology.exchanges:
            await channel.exchange_delete(self.connection.name(exchange))
