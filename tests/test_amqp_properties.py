"""The properties of Loom's publishes (``loom.broker.rabbitmq.publisher.persistent``): its own
encoding of the common case (no headers) gives pamqp's bytes exactly, every other case is
pamqp's, and what RabbitMQ hands a consumer is the same either way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aiormq import spec

from loom.broker import Binding, Message, Topology
from loom.broker.rabbitmq import RabbitMQBroker
from loom.broker.rabbitmq.publisher import PersistentProperties, persistent
from tests.services import require_rabbitmq

TOPOLOGY = Topology(
    bindings=(
        Binding("props.jobs", "direct", "job", "props.jobs"),
        Binding("props.dead", "fanout", "", "props.dead-letters"),
    ),
    dead_letter_exchange="props.dead",
    dead_letter_queue="props.dead-letters",
    limited=(),
)

IDS = ["sig_0123456789abcdef", "é" * 10, "x" * 255, '\u2603 quoted " and \\ id', "a"]
"""Message ids: plain, non-ASCII, the longest a short string holds, odd characters, one."""


@pytest.mark.parametrize("message_id", IDS)
@pytest.mark.parametrize(
    "others",
    [
        {},
        {"headers": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}},
        {"headers": None},
        {"delivery_mode": 1},
        {"priority": 5},
        {"content_type": "application/json"},
        {"timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
        {"app_id": "loom", "correlation_id": "c", "reply_to": "r", "expiration": "60000"},
        {"message_type": "t", "user_id": "guest", "content_encoding": "gzip"},
    ],
)
def test_the_encoding_is_pamqps_byte_for_byte(message_id: str, others: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "delivery_mode": 2,
        "headers": {},
        "message_id": message_id,
        "priority": 0,
        **others,
    }
    assert PersistentProperties(**fields).marshal() == spec.Basic.Properties(**fields).marshal()


def test_a_property_set_after_creation_is_encoded_too() -> None:
    made = persistent(Message(b"x", {}, "sig_1"))
    made.content_type = "text/plain"
    made.headers = {"x-loom-replay": "1"}
    expected = spec.Basic.Properties(
        delivery_mode=2,
        headers={"x-loom-replay": "1"},
        message_id="sig_1",
        priority=0,
        content_type="text/plain",
    )
    assert made.marshal() == expected.marshal()


def test_an_id_too_long_for_a_short_string_is_refused_as_pamqp_refuses_it() -> None:
    made = persistent(Message(b"x", {}, "é" * 128))  # 256 bytes
    with pytest.raises(TypeError, match="maximum length of 255"):
        made.marshal()


def test_a_missing_id_is_made_up_and_an_empty_one_is_left_out() -> None:
    made = persistent(Message(b"x", {}, None))
    assert len(made.message_id or "") == 32
    blank = PersistentProperties(delivery_mode=2, headers={}, message_id="", priority=0)
    expected = spec.Basic.Properties(delivery_mode=2, headers={}, message_id="", priority=0)
    assert blank.marshal() == expected.marshal()


async def test_a_consumer_gets_the_properties_with_and_without_headers(namespace: str) -> None:
    url = require_rabbitmq()
    broker = RabbitMQBroker(url, topology=TOPOLOGY, namespace=namespace)
    await broker.start()
    try:
        await broker.publish("props.jobs", "job", Message(b"plain", {}, "sig_plain\u2603"))
        await broker.publish("props.jobs", "job", Message(b"traced", {"traceparent": "tp"}, "t"))
    finally:
        await broker.close()
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{namespace}.props.jobs", ensure=False)
        got = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
    assert [m.body for m in got] == [b"plain", b"traced"]
    assert [m.message_id for m in got] == ["sig_plain\u2603", "t"]
    # A quorum queue counts deliveries in a header of its own.
    sent = [{k: v for k, v in m.headers.items() if k != "x-delivery-count"} for m in got]
    assert sent == [{}, {"traceparent": "tp"}]
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)
    assert all(m.priority == 0 for m in got)
    assert all(m.content_type is None and m.timestamp is None for m in got)
