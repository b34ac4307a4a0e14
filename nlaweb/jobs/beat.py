"""Celery boundary of the sweeper (Celery beat sends `nlaweb.sweep` every SWEEP_INTERVAL_S to the
`sweep` queue; README: the sweeper process). The task's name is a string the beat schedule and
the routes in settings.py name; it stays `nlaweb.sweep` wherever this module lives."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celery import shared_task
from django.utils import timezone

if TYPE_CHECKING:
    from nlaweb.jobs.sweep import Watch

log = logging.getLogger(__name__)


#: What this sweeper process saw of the database (nlaweb.jobs.sweep.Watch); the sweeper runs one
#: solo-pool process, so its passes share it.
_watch: Watch | None = None


@shared_task(name="nlaweb.sweep", ignore_result=True)
def sweep() -> None:
    from nlaweb.jobs.sweep import Watch
    from nlaweb.jobs.sweep import sweep as sweep_once

    global _watch
    _watch = _watch or Watch()
    summary = sweep_once(timezone.now(), watch=_watch).summary()
    if summary:
        log.info("sweep: %s", summary)
