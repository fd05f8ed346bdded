"""A broker outage behind a running gateway: 503 while RabbitMQ is unreachable, 202 again
once it is back, and every signal the gateway answered 202 for is on the queue.

The outage is staged with a TCP proxy between the gateway process and RabbitMQ, so the
server other tests share keeps running.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from loom import RuntimeSignal
from loom.broker.base import Delivery
from loom.wire import ATTENTION_QUEUE
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.conftest import Cluster
from tests.integration.test_daemon_rabbit_redis import eventually


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_broker_outage_answers_503_and_loses_nothing_accepted(cluster: Cluster) -> None:
    target = urlsplit(cluster.rabbitmq_url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5672).start()
    try:
        [gateway] = await cluster.start_ready(
            "gateway",
            LOOM_BROKER_URL=through(proxy, cluster.rabbitmq_url),
            LOOM_PUBLISH_TIMEOUT="2",
        )
        statuses: dict[str, int] = {}
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:

            async def post(summary: str) -> int:
                signal = RuntimeSignal.create(summary, session_id="outage")
                response = await client.post("/signals", content=signal.model_dump_json())
                statuses[signal.id] = response.status_code
                return response.status_code

            for i in range(20):
                assert await post(f"before {i}") == 202
            proxy.cut()
            during = await asyncio.gather(*(post(f"during {i}") for i in range(5)))
            assert set(during) == {503}, during
            proxy.restore()

            async def accepted_again() -> bool:
                return await post("after the outage") == 202

            await eventually(accepted_again, timeout=60, what="the gateway to accept again")
            for i in range(20):
                assert await post(f"after {i}") == 202

        accepted = {signal_id for signal_id, status in statuses.items() if status == 202}
        queued: set[str] = set()

        async def collect(delivery: Delivery) -> None:
            queued.add(delivery.message.message_id or "")
            await delivery.ack()

        tag = await cluster.broker.consume(ATTENTION_QUEUE, collect)
        try:
            await eventually(
                lambda: asyncio.sleep(0, accepted <= queued),
                timeout=30,
                what="every accepted signal on the attention queue",
            )
        finally:
            await cluster.broker.cancel(tag)
        counts = Counter(statuses.values())
        assert counts[503] >= 5, counts
        assert counts[202] >= 41, counts
    finally:
        await proxy.close()
