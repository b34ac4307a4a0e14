"""One AV explanation of one token: keyed by (snapshot, position, source, generation settings), so a
repeated click is a lookup. Saved as `queued` before the job is enqueued; the worker moves it through
`running` to `done` or `failed` with a reason a person can read.

The row, not the broker message, is the truth: `sent_at` says whether its job reached the broker,
`heartbeat_at` whether the worker holding it is alive, `attempts` how many workers took it. The
sweeper (nlaweb/sweep.py) ends what went silent."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from nlaweb.chat.models import prefix_hashes, prefix_key
from workers.nla.calibration import PLACE_WORDS


def silent_before(now: datetime) -> datetime:
    """A running row whose worker last showed life before this has lost its worker (killed, its
    machine gone, cut off from the database): HEARTBEAT_TIMEOUT_S without a heartbeat."""
    return now - timedelta(seconds=settings.HEARTBEAT_TIMEOUT_S)


def silent(now: datetime) -> Q:
    """Rows whose worker showed no life since `silent_before(now)`; combine with status=running.
    A row from before heartbeats existed is judged by when it started."""
    before = silent_before(now)
    return Q(heartbeat_at__lt=before) | Q(heartbeat_at__isnull=True, started_at__lt=before)


class Explanation(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"  # by its person: never started, or its result is discarded

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
    #: Where relative_mse fell between the source's matched and shuffled medians when it was scored
    #: ("matched", "between", "shuffled"; workers/nla/calibration.py); "" without a calibration.
    calibration = models.CharField(max_length=16, blank=True)
    #: Why the pill and specificity point different ways; "" when they agree.
    confidence_note = models.TextField(blank=True)
    l2_norm = models.FloatField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    #: When its job last reached the broker; None while queued: not sent yet (the broker was down).
    sent_at = models.DateTimeField(null=True, blank=True)
    #: The last sign of life of the worker running it.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    #: How many times a worker took it; a row that keeps killing its worker fails after
    #: JOB_MAX_ATTEMPTS.
    attempts = models.PositiveSmallIntegerField(default=0)
    #: The job (Celery task id) that took it last: a redelivered job takes its own rows back.
    job_id = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["snapshot", "position", "source_id", "settings_key"],
                name="one_explanation_per_token_source_settings",
            )
        ]
        indexes = [
            # The sweeper, the batch-mates query and the per-person cap read only unfinished rows.
            models.Index(
                fields=["status", "source_id", "settings_key"],
                condition=Q(status__in=["queued", "running"]),
                name="explanation_in_flight",
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
    def calibration_words(self) -> str:
        """Where the score fell on the source's scale, in words ("" without a calibration)."""
        return PLACE_WORDS.get(self.calibration, "")

    @property
    def prefix_key(self) -> str:
        """The short prefix hash the page matches this row's section and its token by."""
        return prefix_key(self.prefix_hash)

    @property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in self.text.split("\n\n") if p.strip()]

    @property
    def is_abandoned(self) -> bool:
        """Running, but its worker went silent (see `silent`)."""
        last_sign = self.heartbeat_at or self.started_at
        return (
            self.status == self.Status.RUNNING
            and last_sign is not None
            and last_sign < silent_before(timezone.now())
        )

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED, self.Status.CANCELLED)


class ExplainRun(models.Model):
    """ "Explain this whole message": its tokens, fed to the queue in requests of at most 16 as the
    person's earlier rows finish (so it never hits their cap on rows in flight)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    snapshot = models.ForeignKey("chat.Snapshot", on_delete=models.CASCADE, related_name="runs")
    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="runs")
    positions = models.JSONField()
    #: How many of `positions` were requested so far.
    fed = models.PositiveIntegerField(default=0)
    cancelled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Explain run of {len(self.positions)} tokens ({self.fed} fed)"

    @property
    def feeding(self) -> bool:
        return not self.cancelled and self.fed < len(self.positions)
