"""Shared pytest configuration."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from loom.broker.rabbitmq import RabbitMQBroker
from loom.logs import CHATTY_LOGGERS
from loom.wire import TOPOLOGY
from tests.private_redis import PrivateRedis
from tests.services import require_rabbitmq

pytest_plugins = ["tests.fakes.llm_server"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what a test's ``loom.logs.configure`` did to the root and the chatty loggers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, was in chatty.items():
        logging.getLogger(name).setLevel(was)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, on a port of its own: for tests that stop,
    freeze or restart Redis while the rest of the suite keeps the shared one."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
async def namespace(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace on the RabbitMQ at hand; afterwards the topology the test module
    declares (its ``TOPOLOGY``, else Loom's) is deleted from it."""
    url = require_rabbitmq()
    name = f"loomtest-{uuid.uuid4().hex[:12]}"
    yield name
    topology = getattr(request.module, "TOPOLOGY", TOPOLOGY)
    cleaner = RabbitMQBroker(url, topology=topology, namespace=name)
    await cleaner.start()
    try:
        await cleaner.delete_topology()
    finally:
        await cleaner.close()
