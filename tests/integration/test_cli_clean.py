"""The CLI on the real RabbitMQ and Redis: `loom send` prints the same JSON whichever broker
carries the signal, and a missing Redis behind a working RabbitMQ ends `loom run` with one
line, the open connection closed (no "Event loop is closed" or "Task was destroyed")."""

from __future__ import annotations

import json

from tests.integration.conftest import Cluster, free_port

MEMORY = {"LOOM_BROKER_URL": "memory://", "LOOM_STATE_URL": "memory://"}


async def test_loom_send_prints_the_same_json_on_every_broker(cluster: Cluster) -> None:
    # memory://: `loom send` posts to the running process's /signals.
    process = cluster.start("run", app=None, **MEMORY)
    await cluster.wait_ready(process)
    code, posted, err = await cluster.cli(
        "send", "hello", LOOM_HTTP__PORT=str(process.port), **MEMORY
    )
    assert code == 0, err
    # amqp://: it publishes to RabbitMQ itself.
    code, published, err = await cluster.cli("send", "hello")
    assert code == 0, err

    lines = [posted.splitlines(), published.splitlines()]
    answers = [json.loads(line) for [line] in lines]
    for [line], answer in zip(lines, answers, strict=True):
        assert set(answer) == {"id", "status"}
        assert answer["status"] == "accepted"
        assert answer["id"].startswith("sig_")
        assert line == json.dumps(answer)  # the same layout too, not only the same keys


async def test_a_missing_redis_behind_a_working_rabbitmq_is_one_line(cluster: Cluster) -> None:
    code, out, err = await cluster.cli(
        "run", LOOM_STATE_URL="redis://127.0.0.1:1/0", LOOM_HTTP__PORT=str(free_port())
    )
    assert code == 2
    assert out == ""
    for noise in ("Traceback", "Event loop is closed", "Task was destroyed"):
        assert noise not in err
    [line] = err.splitlines()
    assert line.startswith("loom: error: Redis at redis://127.0.0.1:1/0 is unavailable")
