"""Is RabbitMQ or Redis reachable? Tests of the real backends ask here first.

Under ``CI=true`` a missing service fails the test (CI must run them); elsewhere the test is
skipped with the command that starts the service.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

RABBITMQ_URL = os.environ.get("LOOM_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("LOOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

RABBITMQ_START = "rabbitmq-server -detached && rabbitmqctl await_startup"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def reachable(url: str, default_port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=timeout
        ):
            return True
    except OSError:
        return False


def _require(name: str, url: str, default_port: int, start: str) -> str:
    if reachable(url, default_port):
        return url
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or default_port}"
    message = f"{name} is not reachable at {where}; start it with: {start}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: the real-backend tests must run)", pytrace=False)
    pytest.skip(message)


def require_rabbitmq() -> str:
    """The AMQP URL of the test RabbitMQ, or skip (fail under CI) when it does not answer."""
    return _require("RabbitMQ", RABBITMQ_URL, 5672, RABBITMQ_START)


def require_redis() -> str:
    """The URL of the test Redis, or skip (fail under CI) when it does not answer."""
    return _require("Redis", REDIS_URL, 6379, REDIS_START)


async def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (a test's own namespace) from the Redis at ``url``."""
    if not prefix:
        raise ValueError("refusing to delete every key: give a prefix")
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
