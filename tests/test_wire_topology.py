"""Loom's topology is data in ``loom.wire``; the broker package names none of it."""

from __future__ import annotations

from pathlib import Path

import pytest

import loom.broker
from loom.broker import Binding, MemoryBroker, Message, Topology
from loom.wire import (
    ATTENTION_QUEUE,
    DEAD_LETTER_QUEUE,
    REPLIES_EXCHANGE,
    REPLIES_QUEUE,
    REPLY_ROUTING_KEY,
    SIGNALS_EXCHANGE,
    TOPOLOGY,
    WORK_EXCHANGE,
    WORK_QUEUE,
    WORK_ROUTING_KEY,
    broker_from_url,
)


def test_loom_topology_keeps_its_names() -> None:
    """The names on the broker are part of the wire: they do not change."""
    assert TOPOLOGY.exchanges == ("loom.signals", "loom.work", "loom.replies", "loom.dead")
    assert TOPOLOGY.queues == ("loom.attention", "loom.work", "loom.replies", "loom.dead-letters")
    assert TOPOLOGY.limited == ("loom.attention", "loom.work", "loom.replies")
    assert (TOPOLOGY.dead_letter_exchange, TOPOLOGY.dead_letter_queue) == (
        "loom.dead",
        "loom.dead-letters",
    )


async def test_brokers_from_loom_wire_route_by_loom_topology() -> None:
    broker = broker_from_url("memory://")
    assert isinstance(broker, MemoryBroker)
    assert broker.topology is TOPOLOGY
    await broker.publish(SIGNALS_EXCHANGE, "cron.tick", Message(b"s"))
    await broker.publish(WORK_EXCHANGE, WORK_ROUTING_KEY, Message(b"w"))
    await broker.publish(REPLIES_EXCHANGE, REPLY_ROUTING_KEY, Message(b"r"))
    depths = [await broker.queue_depth(q) for q in (ATTENTION_QUEUE, WORK_QUEUE, REPLIES_QUEUE)]
    assert depths == [1, 1, 1]
    assert await broker.queue_depth(DEAD_LETTER_QUEUE) == 0


def test_a_topology_must_bind_its_dead_letter_and_limited_queues() -> None:
    bindings = (Binding("x", "direct", "k", "q"),)
    with pytest.raises(ValueError, match="not bound in the topology: dead, dlq"):
        Topology(bindings, dead_letter_exchange="dead", dead_letter_queue="dlq", limited=("q",))
    with pytest.raises(ValueError, match="unknown queue 'nope'"):
        Topology(bindings, "x", "q", ()).check_queue("nope")


def test_the_broker_package_names_no_exchange_or_queue_of_loom() -> None:
    package = Path(loom.broker.__file__).parent
    names = set(TOPOLOGY.exchanges) | set(TOPOLOGY.queues)
    for source in package.rglob("*.py"):
        text = source.read_text()
        named = sorted(name for name in names if f'"{name}"' in text)
        assert not named, f"{source.relative_to(package)} names {named}"


def test_a_name_that_moved_to_the_wire_says_where_it_went() -> None:
    with pytest.raises(ImportError, match=r"from loom.wire import ATTENTION_QUEUE"):
        from loom.broker import ATTENTION_QUEUE  # noqa: F401
    with pytest.raises(ImportError, match=r"from loom.wire import TOPOLOGY"):
        from loom.broker.base import TOPOLOGY  # noqa: F401
