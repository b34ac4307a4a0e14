"""The store API jobs (tokenize, raw vectors) are handed (workers/store.py's ApiStore protocol): read
an ApiJob row, move it to running, store its result or its reason, and announce the end on the
job's group. The job logic (workers/tokenize.py, workers/raw_vectors.py) sees plain values."""

from __future__ import annotations

import logging
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone
from pydantic import BaseModel

from nlaweb.api.models import ApiJob
from nlaweb.chat.models import Message
from nlaweb.jobs.django_store import DjangoStore
from workers.contracts import ApiJobFinished, api_job_group
from workers.store import ApiJobInput, Turn

log = logging.getLogger(__name__)


class ApiStore(DjangoStore):
    def claim_api_job(self, job_id: str) -> ApiJobInput | None:
        """The queued row, now running; None when another delivery took it or it is finished."""
        with transaction.atomic():
            job = (
                ApiJob.objects.select_for_update(skip_locked=True)
                .filter(pk=job_id, status=ApiJob.Status.QUEUED)
                .first()
            )
            if job is None:
                return None
            job.status, job.started_at = ApiJob.Status.RUNNING, timezone.now()
            job.save(update_fields=["status", "started_at"])
        return ApiJobInput(str(job.pk), job.kind, job.source_id, dict(job.payload))

    def tokenize_input(self, leaf_id: str) -> list[Turn]:
        """The turns of the path root → `leaf_id`."""
        leaf = Message.objects.get(pk=leaf_id)
        return [Turn(str(m.id), m.role, m.content) for m in leaf.path()]

    def finish_api_job(self, job_id: str, result: dict[str, Any]) -> None:
        self._end(job_id, "done", result=result)

    def fail_api_job(self, job_id: str, error: str, error_code: str) -> None:
        self._end(job_id, "failed", error=error, error_code=error_code)

    def _end(self, job_id: str, status: Literal["done", "failed"], **fields: Any) -> None:
        ApiJob.objects.filter(pk=job_id).update(status=status, finished_at=timezone.now(), **fields)
        try:  # the row is the truth: a lost hint costs the waiter one re-check, never the result
            self.publish_to(api_job_group(job_id), ApiJobFinished(job_id=job_id, status=status))
        except Exception:
            log.exception("could not announce the end of API job %s", job_id)

    def publish_to(self, group: str, frame: BaseModel) -> None:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(group, frame.model_dump())
