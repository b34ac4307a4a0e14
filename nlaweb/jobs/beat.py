"""Celery boundary of the sweeper (Celery beat sends `nlaweb.sweep` every SWEEP_INTERVAL_S to the
`sweep` queue; README: the sweeper process). The task's name is a string the beat schedule and
the routes in settings.py name; it stays `nlaweb.sweep` wherever this module lives."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

log = logging.getLogger(__name__)


@shared_task(name="nlaweb.sweep", ignore_result=True)
def sweep() -> None:
    from nlaweb.jobs.sweep import sweep as sweep_once

    summary = sweep_once(timezone.now()).summary()
    if summary:
        log.info("sweep: %s", summary)
