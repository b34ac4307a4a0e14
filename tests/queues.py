"""Job queues for tests that read what was sent without a worker taking it: kombu's in-process
`memory://` transport (a real broker client, its messages readable here), and a broker whose port
refuses connections (a broker that is down)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from nlaweb.jobs.broker import Broker
from workers.contracts import GPU_QUEUE

DOWN_URL = "redis://127.0.0.1:1/0"  # port 1: nothing listens, a connection is refused at once


def memory_broker() -> Broker:
    broker = Broker(Celery("tests", broker="memory://", set_as_current=False))
    sent(broker)  # the memory transport is shared by the process: start empty
    return broker


def down_broker() -> Broker:
    """The project's Celery configuration with Redis, wherever it is used, at a dead port."""
    celery = Celery("tests-down", set_as_current=False)
    celery.config_from_object("django.conf:settings", namespace="CELERY")
    celery.conf.broker_url = DOWN_URL
    if celery.conf.result_backend:
        celery.conf.result_backend = DOWN_URL
    return Broker(celery)


def sent(broker: Broker) -> list[tuple[str, Any]]:
    """(task name, args) of every job waiting in the gpu queue, oldest first; takes them out."""
    jobs = []
    with broker.celery.connection_for_read() as connection:
        queue = connection.SimpleQueue(GPU_QUEUE)
        while True:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                break
            jobs.append((message.headers["task"], message.payload[0]))
            message.ack()
        queue.close()
    return jobs
