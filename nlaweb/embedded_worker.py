"""The embedded mode's GPU worker: the same Celery tasks, consumed from the in-process `memory://`
broker by a solo-pool worker running in a thread of the web process."""

from __future__ import annotations

import threading

from nlaweb.celery import app
from workers.contracts import GPU_QUEUE


def start_embedded_worker() -> threading.Thread:
    """Start the worker thread (daemon) and return once it consumes the gpu queue."""
    app.loader.import_default_modules()
    ready = threading.Event()
    worker = app.WorkController(
        app=app,
        pool_cls="solo",
        concurrency=1,
        queues=[GPU_QUEUE],
        hostname="embedded@nlaweb",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="INFO",
        ready_callback=lambda consumer: ready.set(),
    )
    thread = threading.Thread(target=worker.start, name="embedded-gpu-worker", daemon=True)
    thread.start()
    if not ready.wait(timeout=30):
        raise RuntimeError("The embedded worker did not start within 30 s.")
    return thread
