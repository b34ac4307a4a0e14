"""Rows of the researcher API: hashed keys, per-user limits, the sliding-window log of the database
rate limiter, inputs the API turned into conversations, and jobs whose results are not explanations
(tokenizing, raw vectors, scores)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from nlaweb.api.keys import NewKey, matches, new_key, prefix_of
from nlaweb.jobs.life import QueuedJobQuerySet
from nlaweb.jobs.liveness import api_job_gave_up, gave_up, silent


class ApiKeyManager(models.Manager["ApiKey"]):
    def issue(self, user: User, name: str) -> tuple[ApiKey, str]:
        """A new key for `user` and its raw value, which is shown once and never stored."""
        made: NewKey = new_key()
        key = self.create(user=user, name=name, prefix=made.prefix, digest=made.digest)
        return key, made.raw

    def for_raw_key(self, raw: str) -> ApiKey | None:
        """The live key whose hash matches `raw`, or None (malformed, unknown or revoked)."""
        prefix = prefix_of(raw)
        if prefix is None:
            return None
        key = self.select_related("user").filter(prefix=prefix, revoked_at=None).first()
        if key is None or not matches(raw, key.digest) or not key.user.is_active:
            return None
        return key


class ApiKey(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (nla_{self.prefix}_…)"

    @property
    def shown_prefix(self) -> str:
        return f"nla_{self.prefix}_…"

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class ApiLimits(models.Model):
    """A user's own hourly limits; an empty field keeps the default of the settings."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_limits"
    )
    explain_per_hour = models.PositiveIntegerField(null=True, blank=True)
    completion_per_hour = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "API limits"

    def __str__(self) -> str:
        return f"API limits of {self.user}"


class RateEvent(models.Model):
    """One counted request of the database sliding window (the embedded mode's limiter)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    bucket = models.CharField(max_length=32)
    at = models.FloatField()  # Unix time, seconds

    class Meta:
        indexes = [models.Index(fields=["user", "bucket", "at"], name="rate_event_window")]

    def __str__(self) -> str:
        return f"{self.bucket} request of user {self.user_id} at {self.at:.0f}"


class ApiInput(models.Model):
    """A conversation the API created from a request's `messages` or `text`: the same input asked
    again (same user, source and content) reuses it, so its stored explanations come back cached."""

    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.CASCADE, related_name="api_inputs"
    )
    leaf = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    source_id = models.CharField(max_length=100)
    input_hash = models.CharField(max_length=64)
    raw_text = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "source_id", "input_hash"], name="one_api_input_per_content"
            )
        ]

    def __str__(self) -> str:
        return f"API input of conversation {self.conversation_id}"


QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: `error_code` of a job that workers kept dying on (the API answers it with a 503).
WORKER_LOST = "WorkerLost"


class ApiJobQuerySet(QueuedJobQuerySet["ApiJob"]):
    """Every state change of an API job: send, claim, beat, requeue, give up, finish, fail, cancel.
    The API, the latents page, the store and the sweeper call these; nothing else updates status."""

    # -- which jobs ---------------------------------------------------------------------------
    def unsent(self) -> ApiJobQuerySet:
        """Queued jobs whose message never reached the broker (it was down, or they were requeued)."""
        return self.filter(status=QUEUED, sent_at__isnull=True)

    def sent_before(self, before: datetime) -> ApiJobQuerySet:
        """Queued jobs whose message reached the broker before `before` (lost, if none waits)."""
        return self.filter(status=QUEUED, sent_at__lt=before)

    # -- state changes ------------------------------------------------------------------------
    def claim(self, pk: str, job_id: str, now: datetime) -> ApiJob | None:
        """Job `pk` taken by the worker job `job_id`: queued, redelivered to the same task id (its
        process died), or running under a silent worker. Failed instead once JOB_MAX_ATTEMPTS
        workers died on it (returned with status failed). None when there is nothing to do:
        finished, or held by a live worker. Call inside a transaction."""
        job = (
            self.select_for_update(skip_locked=True)
            .filter(pk=pk)
            .filter(
                Q(status=QUEUED)
                | Q(status=RUNNING, job_id=job_id)
                | (Q(status=RUNNING) & silent(now))
            )
            .first()
        )
        if job is None:
            return None
        one = self.filter(pk=job.pk)
        if gave_up(job.attempts):
            one.give_up(api_job_gave_up(job.attempts), now)
        else:
            one.start(job_id, now)
        job.refresh_from_db()
        return job

    def start(self, job_id: str, now: datetime) -> int:
        """Taken by the worker job `job_id`: running, alive now, one attempt more."""
        return self.update(
            status=RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            job_id=job_id,
        )

    def requeue(self) -> int:
        """Back to queued and unsent (attempts kept): the sweeper sends it again."""
        return self.update(status=QUEUED, job_id="", sent_at=None, heartbeat_at=None)

    def give_up(self, error: str, now: datetime) -> int:
        """Failed for good with `error` (workers kept dying on it)."""
        return self.update(
            status=FAILED, error=error, error_code=WORKER_LOST, finished_at=now, job_id=""
        )

    def finish(self, result: dict[str, Any], now: datetime) -> int:
        """Store the result on jobs not finished yet (combine with `held_by`)."""
        return self.filter(status__in=(QUEUED, RUNNING)).update(
            status=DONE, result=result, finished_at=now
        )

    def fail(self, error: str, error_code: str, now: datetime) -> int:
        """Fail jobs not finished yet (combine with `held_by`): a late error never undoes a result."""
        return self.filter(status__in=(QUEUED, RUNNING)).update(
            status=FAILED, error=error, error_code=error_code, finished_at=now
        )

    def cancel(self, error: str, now: datetime) -> int:
        """Fail the queued ones with `error` (cancelled by their person); running ones go on."""
        return self.filter(status=QUEUED).update(status=FAILED, error=error, finished_at=now)


class ApiJob(models.Model):
    """A worker job of the API whose result is not an Explanation row: tokenizing a conversation,
    explaining raw vectors, scoring a label. Saved queued before it is enqueued; the worker moves
    it to running, then done with `result` or failed with `error` (one sentence).

    As with explanations, the row is the truth and the message a hint: `sent_at` says whether its
    message reached the broker, `heartbeat_at` whether its worker is alive, `attempts` how many
    workers took it and `job_id` which one holds it; the sweeper (nlaweb/jobs/sweep.py) sends what
    was never sent or was lost, and requeues or fails what went silent."""

    class Kind(models.TextChoices):
        TOKENIZE = "tokenize"
        EXPLAIN_VECTORS = "explain_vectors"
        SCORE = "score"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    source_id = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    payload = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: When its message last reached the broker; None while queued: not sent yet.
    sent_at = models.DateTimeField(null=True, blank=True)
    #: The last sign of life of the worker running it.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    #: How many times a worker took it; one that keeps killing workers fails after JOB_MAX_ATTEMPTS.
    attempts = models.PositiveSmallIntegerField(default=0)
    #: The worker job (Celery task id) that took it last: only its result is stored.
    job_id = models.CharField(max_length=64, blank=True)

    objects = ApiJobQuerySet.as_manager()

    def __str__(self) -> str:
        return f"API job {self.kind} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)
