"""The Celery side of bench/pipeline.py: a no-op task and a last task that answers.

Imported by the bench (as ``helpers.celery_noop``) and by the Celery worker it starts
(``celery -A celery_noop worker`` in ``bench/helpers``). Broker:
``LOOM_BENCH_RABBITMQ_URL``; queue: ``LOOM_BENCH_CELERY_QUEUE``. Celery's defaults
otherwise (prefetch multiplier 4, early ack).
"""

from __future__ import annotations

import os

from celery import Celery

BROKER = os.environ.get("LOOM_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUE = os.environ.get("LOOM_BENCH_CELERY_QUEUE", "loom-bench-celery")

app = Celery("loom_bench", broker=BROKER, backend="rpc://")
app.conf.task_default_queue = QUEUE
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False


@app.task(name="loom_bench.noop", ignore_result=True)
def noop(i: int) -> None:
    """Does nothing: what is measured is Celery's own cost per task."""


@app.task(name="loom_bench.last")  # named: the bench and the worker import it apart
def last(i: int) -> int:
    """Sent after the no-ops; one solo worker runs tasks in order, so its answer means
    every no-op before it ran."""
    return i
