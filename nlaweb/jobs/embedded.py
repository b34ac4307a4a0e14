"""The embedded mode's GPU worker and sweeper: the same Celery tasks, consumed from the in-process
`memory://` broker by a solo-pool worker running in a thread of the web process, and the sweeper
(nlaweb/jobs/sweep.py) in another thread every SWEEP_INTERVAL_S."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from nlaweb.celery import app
from workers.contracts import GPU_QUEUE

log = logging.getLogger(__name__)


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


def start_embedded_sweeper() -> threading.Thread:
    """Start the sweeper thread (daemon): a pass now (what a previous run left), then one every
    SWEEP_INTERVAL_S."""
    thread = threading.Thread(target=_sweep_forever, name="embedded-sweeper", daemon=True)
    thread.start()
    return thread


def _sweep_forever() -> None:
    from nlaweb.jobs.sweep import sweep

    pause = threading.Event()
    while True:
        try:
            summary = sweep(timezone.now()).summary()
            if summary:
                log.info("sweep: %s", summary)
        except Exception:  # a pass that failed (the database is down) is retried on the next one
            log.exception("sweep failed")
        finally:
            close_old_connections()
        pause.wait(settings.SWEEP_INTERVAL_S)
