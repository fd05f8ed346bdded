"""The broker port on RabbitMQ: ``RabbitMQBroker`` (``broker``) and its parts."""

from __future__ import annotations

from loom.broker.rabbitmq.broker import RabbitMQBroker
from loom.broker.rabbitmq.connection import mask_url

__all__ = ["RabbitMQBroker", "mask_url"]
