"""Rows of the latents page: a latent's explanation (the AV's text for its decoder direction and the
AR's score), a batch run of such explanations, and a person's autointerp label with its three scores.

The work goes through the API's ApiJob rows and the worker's vector jobs (workers/raw_vectors.py); each
row here points at the job that computes it and copies the job's outcome once the job has ended
(`nlaweb.latents.batches.settle`), so the job row stays the truth while it runs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class LatentRun(models.Model):
    """ "Explain these latents": a person's batch, queued as ApiJobs of a few latents each."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    source_id = models.CharField(max_length=100)
    indices = models.JSONField()
    cancelled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Latent run of {len(self.indices)} latents of {self.source_id}"


class LatentExplanation(models.Model):
    """The AV's explanation of one latent's decoder direction with the AR's score: one row per
    (source, latent), shared by everyone who browses that source (a decoder row is nobody's data)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source_id = models.CharField(max_length=100)
    index = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    job = models.ForeignKey("api.ApiJob", null=True, on_delete=models.SET_NULL, related_name="+")
    slot = models.PositiveSmallIntegerField(default=0)  # this latent's place in the job's vectors
    run = models.ForeignKey(
        LatentRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="rows"
    )
    scale = models.FloatField(default=1.0)  # the L2 norm the unit decoder row was sent at
    description = models.TextField(blank=True)
    truncated = models.BooleanField(default=False)
    relative_mse = models.FloatField(null=True, blank=True)
    fve = models.FloatField(null=True, blank=True)
    cosine = models.FloatField(null=True, blank=True)
    confidence = models.CharField(max_length=16, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source_id", "index"], name="one_explanation_per_latent"
            )
        ]

    def __str__(self) -> str:
        return f"Latent {self.index} of {self.source_id} ({self.status})"

    @property
    def in_flight(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)


class LatentLabel(models.Model):
    """A person's autointerp label for a latent, scored by the three scorers in one ApiJob."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    source_id = models.CharField(max_length=100)
    index = models.PositiveIntegerField()
    label = models.CharField(max_length=500)
    job = models.ForeignKey("api.ApiJob", null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Label of latent {self.index}: {self.label[:40]}"
