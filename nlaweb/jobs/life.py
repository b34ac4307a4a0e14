"""The part of a queued job's life that explanation rows and API jobs share (both are queued, then
running under one worker job's id with a heartbeat): which are silent, sent, alive, and whose
result a worker job may store. Each model's QuerySet adds its own claim, finish and fail."""

from __future__ import annotations

from datetime import datetime
from typing import Self, TypeVar

from django.db import models
from django.db.models import Q

from nlaweb.jobs.liveness import silent

QUEUED, RUNNING = "queued", "running"

_Row = TypeVar("_Row", bound=models.Model)


class QueuedJobQuerySet(models.QuerySet[_Row]):
    def silent(self, now: datetime) -> Self:
        """Running ones whose worker went silent (see nlaweb.jobs.liveness.silent)."""
        return self.filter(silent(now), status=RUNNING)

    def mark_sent(self, now: datetime) -> int:
        """The broker took their message: those still queued are not the sweeper's to send."""
        return self.filter(status=QUEUED).update(sent_at=now)

    def beat(self, job_id: str, now: datetime) -> int:
        """The worker of job `job_id` (a Celery task id) is alive: what it runs says so."""
        return self.filter(status=RUNNING, job_id=job_id).update(heartbeat_at=now)

    def held_by(self, job_id: str) -> Self:
        """Those whose result `job_id` may store: still running it, or handed back by the sweeper
        and not taken again. One another job took since keeps that job's result: the job id on
        the row fences a worker that was taken for dead."""
        return self.filter(Q(status=RUNNING, job_id=job_id) | Q(status=QUEUED, job_id=""))
