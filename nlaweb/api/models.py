"""Rows of the researcher API: hashed keys, per-user limits, the sliding-window log of the database
rate limiter, inputs the API turned into conversations, and jobs whose results are not explanations
(tokenizing, raw vectors, scores)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models
from django.utils import timezone

from nlaweb.api.keys import NewKey, matches, new_key, prefix_of


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


class ApiJob(models.Model):
    """A worker job of the API whose result is not an Explanation row: tokenizing a conversation,
    explaining raw vectors, scoring a label. Saved queued before it is enqueued; the worker moves
    it to running, then done with `result` or failed with `error` (one sentence)."""

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

    def __str__(self) -> str:
        return f"API job {self.kind} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)
