"""One AV explanation of one token: keyed by (snapshot, position, source, generation settings), so a
repeated click is a lookup. Saved as `queued` before the job is enqueued; the worker moves it through
`running` to `done` or `failed` with a reason a person can read."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from nlaweb.chat.models import prefix_hashes


def abandoned_before() -> datetime:
    """A row still running that started before this has lost its worker: every job is stopped by
    its time limit, so nobody will finish it (an embedded worker's restart, a killed process)."""
    return timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)


class Explanation(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    snapshot = models.ForeignKey(
        "chat.Snapshot", on_delete=models.CASCADE, related_name="explanations"
    )
    position = models.PositiveIntegerField()
    #: `chat.models.prefix_hashes(snapshot.token_ids)[position]`: the same token prefix in another
    #: snapshot of the conversation (a later turn, another branch) has the same explanation.
    prefix_hash = models.CharField(max_length=64, blank=True, db_index=True)
    source_id = models.CharField(max_length=100)
    settings_key = models.CharField(max_length=200)
    settings = models.JSONField(default=dict)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=32, default="queued")
    token_id = models.IntegerField(null=True, blank=True)
    token_text = models.CharField(max_length=200, blank=True)

    text = models.TextField(blank=True)
    raw_text = models.TextField(blank=True)
    truncated = models.BooleanField(default=False)
    mse = models.FloatField(null=True, blank=True)
    cosine = models.FloatField(null=True, blank=True)
    fve = models.FloatField(null=True, blank=True)
    relative_mse = models.FloatField(null=True, blank=True)
    confidence = models.CharField(max_length=16, blank=True)
    #: Fraction of the source's reference explanations whose reconstruction of this activation is
    #: worse than this one's (workers/nla/specificity.py); None while the pool is too small.
    specificity = models.FloatField(null=True, blank=True)
    l2_norm = models.FloatField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["snapshot", "position", "source_id", "settings_key"],
                name="one_explanation_per_token_source_settings",
            )
        ]
        ordering = ["position"]

    def __str__(self) -> str:
        return f"Explanation of #{self.position} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.prefix_hash:  # every row is findable by its token prefix, however it was made
            self.prefix_hash = prefix_hashes(self.snapshot.token_ids[: self.position + 1])[-1]
        super().save(*args, **kwargs)

    @property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in self.text.split("\n\n") if p.strip()]

    @property
    def is_abandoned(self) -> bool:
        started = self.started_at
        return (
            self.status == self.Status.RUNNING
            and started is not None
            and started < abandoned_before()
        )

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)
