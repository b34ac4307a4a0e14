"""One AV explanation of one token: keyed by (snapshot, position, source, generation settings), so a
repeated click is a lookup. Saved as `queued` before the job is enqueued; the worker moves it through
`running` to `done` or `failed` with a reason a person can read.

The row, not the broker message, is the truth: `sent_at` says whether its job reached the broker,
`heartbeat_at` whether the worker holding it is alive, `attempts` how many workers took it. The
sweeper (nlaweb/sweep.py) ends what went silent."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Count, F, Min, OuterRef, Q, Subquery, Value, Window
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from nlaweb.chat.models import prefix_hashes, prefix_key
from nlaweb.jobs.life import QueuedJobQuerySet
from nlaweb.jobs.liveness import explanation_gave_up, gave_up, silent, silent_before
from workers.nla.calibration import PLACE_WORDS

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


@dataclass
class Claim:
    """What taking a job's rows decided: rows to run, rows failed for good, rows handed back."""

    rows: list[Explanation] = field(default_factory=list)
    given_up: list[Explanation] = field(default_factory=list)
    released: list[Explanation] = field(default_factory=list)


class ExplanationQuerySet(QueuedJobQuerySet["Explanation"]):
    """Every state change of a row's job: queue, send, claim, beat, requeue, give up, finish, fail,
    cancel. The store, the sweeper, the views and the API call these; nothing else updates status."""

    # -- which rows ---------------------------------------------------------------------------
    def in_flight(self) -> ExplanationQuerySet:
        return self.filter(status__in=(QUEUED, RUNNING))

    def locked(self) -> ExplanationQuerySet:
        """Locked for this transaction; rows another transaction holds are skipped, not awaited."""
        return self.select_for_update(skip_locked=True, of=("self",)).select_related("snapshot")

    def in_turns(
        self, turns: int | None = None, held: ExplanationQuerySet | None = None
    ) -> ExplanationQuerySet:
        """The fairness order, the one workers take rows in and queue places count in: people in
        turns (each person's oldest first, by position within one request), people in the order
        of their oldest row; with `turns`, only each person's first `turns` rows. With `held`,
        each person's turns come after their rows in it (rows running in a decode whose freed
        slots these rows fill are turns that person already has)."""
        owner = F("snapshot__conversation__owner_id")
        ranked = self.annotate(
            owner=owner,
            turn=Window(RowNumber(), partition_by=[owner], order_by=[F("created_at"), "position"]),
            owner_since=Window(Min("created_at"), partition_by=[owner]),
            taken=Coalesce(Subquery(_count_per_owner(held)), 0) if held is not None else Value(0),
        )
        if turns is not None:
            ranked = ranked.filter(turn__lte=turns)
        order = F("turn") + F("taken")
        return ranked.order_by(order, "owner_since", "owner", "created_at", "position")

    # -- state changes ------------------------------------------------------------------------
    def start(self, job_id: str, now: datetime) -> int:
        """Taken by job `job_id`: running, alive now, one attempt more."""
        return self.update(
            status=RUNNING,
            stage="loading",
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            job_id=job_id,
        )

    def requeue(self) -> int:
        """Back to queued and unsent (attempts kept): the next sweep, or the caller, sends them."""
        return self.update(
            status=QUEUED, stage="queued", job_id="", sent_at=None, heartbeat_at=None
        )

    def give_up(self, error: str, now: datetime) -> int:
        """Failed for good with `error` (workers kept dying on them)."""
        return self.update(status=FAILED, stage="failed", error=error, finished_at=now, job_id="")

    def set_stage(self, stage: str) -> int:
        return self.update(stage=stage)

    def finish(self, fields: dict[str, Any], now: datetime) -> int:
        """Store a result; only on rows still running or handed back untaken (`held_by` picks
        whose): a row cancelled meanwhile stays cancelled."""
        return self.filter(status__in=(RUNNING, QUEUED)).update(
            **fields, status=DONE, stage="done", finished_at=now
        )

    def fail(self, error: str, now: datetime) -> int:
        """Fail the rows not already done (a late error never undoes a stored result)."""
        return self.exclude(status=DONE).update(
            status=FAILED, stage="failed", error=error, finished_at=now
        )

    def cancel(self, error: str, now: datetime) -> int:
        """Cancelled by their person: a queued row never starts, a running one's result is dropped."""
        return self.update(status=CANCELLED, stage="cancelled", error=error, finished_at=now)

    def claim(self, explanation_ids: list[str], job_id: str, limit: int, now: datetime) -> Claim:
        """Take up to `limit` queued rows of the job's source and settings, in turns over their
        owners, marked running by `job_id`. A row a worker already died on runs alone (its
        batch-mates are handed back, requeued), one that JOB_MAX_ATTEMPTS workers died on fails,
        and a redelivered job (same id) takes its own rows back. Call inside a transaction."""
        group = (
            self.filter(pk__in=explanation_ids)
            .order_by("position")
            .values("source_id", "settings_key")
            .first()
        )
        if group is None:
            return Claim()
        own = list(
            self.filter(pk__in=explanation_ids, **group)
            .locked()
            .filter(
                Q(status=QUEUED)
                | Q(status=RUNNING, job_id=job_id)
                | (Q(status=RUNNING) & silent(now))
            )
            .order_by("position")
        )
        claim = Claim(given_up=[row for row in own if gave_up(row.attempts)])
        for row in claim.given_up:
            row.error = explanation_gave_up(row.attempts)
            self.filter(pk=row.pk).give_up(row.error, now)
        live = [row for row in own if row not in claim.given_up]
        if any(row.attempts > 0 or row.status == RUNNING for row in live):
            retried = [row for row in live if row.attempts > 0 or row.status == RUNNING]
            claim.rows = retried[:1]
            claim.released = [row for row in live if row not in claim.rows]
            self.filter(pk__in=[row.pk for row in claim.released]).requeue()
        else:
            claim.rows = self._take_in_turns(group, limit)
        self.filter(pk__in=[row.pk for row in claim.rows]).start(job_id, now)
        return claim

    def take_waiting(self, like: str, job_id: str, limit: int, now: datetime) -> list[Explanation]:
        """Up to `limit` more queued rows of the source and settings of row `like`, in turns over
        their owners, marked running by `job_id`: a running job fills the slots its finished rows
        freed. Rows a worker died on are left to run alone, and a job running one (`like` taken
        more than once) takes none. Call inside a transaction."""
        group = self.filter(pk=like, attempts__lte=1).values("source_id", "settings_key").first()
        if group is None:
            return []
        rows = self._take_in_turns(group, limit, held=self.filter(status=RUNNING, **group))
        self.filter(pk__in=[row.pk for row in rows]).start(job_id, now)
        return rows

    def _take_in_turns(
        self, group: Mapping[str, Any], limit: int, held: ExplanationQuerySet | None = None
    ) -> list[Explanation]:
        """Up to `limit` queued rows of `group` nobody's worker died on, in `in_turns` order
        (after each person's rows in `held`), locked. Rows other workers hold are skipped and the
        next ones looked at, so a job takes a full batch whenever one waits."""
        waiting = self.filter(status=QUEUED, attempts=0, **group)
        order: list[Any] = []
        taken: dict[Any, Explanation] = {}
        while len(taken) < limit:
            ranked = waiting.exclude(pk__in=order).in_turns(limit, held)
            turns = list(ranked.values_list("pk", flat=True))
            if not turns:
                break
            order += turns
            start = 0
            while len(taken) < limit and start < len(turns):
                chunk = turns[start : start + limit - len(taken)]
                start += len(chunk)
                locked = self.filter(pk__in=chunk, status=QUEUED).locked()
                taken.update({row.pk: row for row in locked})
        return [taken[pk] for pk in order if pk in taken]

    def queue_places(self, source_id: str, limit: int = 500) -> dict[str, int]:
        """Explanation id → its 1-based place among the source's queued rows, in `in_turns` order."""
        rows = self.filter(source_id=source_id, status=QUEUED).in_turns()[:limit]
        return {str(pk): place for place, pk in enumerate(rows.values_list("pk", flat=True), 1)}


def _count_per_owner(rows: ExplanationQuerySet) -> Any:
    """How many of `rows` the outer row's person has (a subquery on its `owner`)."""
    owner = "snapshot__conversation__owner_id"
    mine = rows.filter(**{owner: OuterRef("owner")}).order_by().values(owner)
    return mine.annotate(count=Count("pk")).values("count")


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

    objects = ExplanationQuerySet.as_manager()

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

    def reset(self) -> None:
        """Queued again and unsent. Asking again after a failure starts the count of attempts
        anew; a row whose worker went silent keeps it (so it runs alone, and fails if it keeps
        killing)."""
        if self.status == self.Status.FAILED:
            self.attempts = 0
        self.status = self.Status.QUEUED
        self.stage = "queued"
        self.error = ""
        self.text = self.raw_text = ""
        self.sent_at = self.heartbeat_at = None
        self.job_id = ""
        self.save(
            update_fields=[
                *("status", "stage", "error", "text", "raw_text"),
                *("sent_at", "heartbeat_at", "job_id", "attempts"),
            ]
        )


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
