"""The store API jobs (tokenize, raw vectors) are handed (workers/store.py's ApiStore protocol): claim
an ApiJob row (`ApiJob.objects.claim`), keep its heartbeat while the job runs, store its result or
its reason if the row is still this job's, and announce the end on the job's group. The job logic
(workers/tokenize.py, workers/raw_vectors.py) sees plain values."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from django.db import transaction
from django.utils import timezone

from nlaweb.api.models import ApiJob
from nlaweb.chat.models import Message
from nlaweb.jobs.django_store import DjangoStore
from nlaweb.jobs.frames import publish_group
from workers.contracts import ApiJobFinished, api_job_group
from workers.store import ApiJobInput, Turn

log = logging.getLogger(__name__)


class ApiStore(DjangoStore):
    """The API jobs' side of the store: `job_id` (the Celery task id) claims the ApiJob row, its
    heartbeat thread beats the row, and only the job that holds the row stores its end."""

    def claim_api_job(self, job_id: str) -> ApiJobInput | None:
        """The job's row, now running under this worker job; None when there is nothing to do
        (finished, held by a live worker, or failed now because workers kept dying on it)."""
        job = self._retrying("take the API job", lambda: self._take(job_id))
        if job is None:
            return None
        if job.status == ApiJob.Status.FAILED:
            self._announce(job_id, "failed")
            return None
        return ApiJobInput(str(job.pk), job.kind, job.source_id, dict(job.payload))

    def _take(self, job_id: str) -> ApiJob | None:
        with transaction.atomic():
            return ApiJob.objects.claim(job_id, self.job_id, timezone.now())

    def _beat_rows(self, now: datetime) -> None:
        ApiJob.objects.beat(self.job_id, now)

    def tokenize_input(self, leaf_id: str) -> list[Turn]:
        """The turns of the path root → `leaf_id`."""
        leaf = Message.objects.get(pk=leaf_id)
        return [Turn(str(m.id), m.role, m.content) for m in leaf.path()]

    def finish_api_job(self, job_id: str, result: dict[str, Any]) -> None:
        held = ApiJob.objects.filter(pk=job_id).held_by(self.job_id)
        if self._retrying(
            "store the API job's result", lambda: held.finish(result, timezone.now())
        ):
            self._announce(job_id, "done")
        else:
            log.warning(
                "API job %s is held by another worker job; result of %s dropped",
                job_id,
                self.job_id,
            )

    def fail_api_job(self, job_id: str, error: str, error_code: str) -> None:
        held = ApiJob.objects.filter(pk=job_id).held_by(self.job_id)
        stored = self._retrying(
            "store the API job's failure", lambda: held.fail(error, error_code, timezone.now())
        )
        if stored:
            self._announce(job_id, "failed")

    def _announce(self, job_id: str, status: Literal["done", "failed"]) -> None:
        """Best effort: the row is the truth, and a lost hint costs the waiter one re-check."""
        publish_group(api_job_group(job_id), ApiJobFinished(job_id=job_id, status=status))
