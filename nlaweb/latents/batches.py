"""Explaining latents: each latent's unit decoder row, scaled as its source's injection expects
(nlaweb/latents/attached.py), goes to the worker in the API's own explain-vectors job (ApiJob,
workers/raw_vectors.py), a few latents per job; a batch run queues all its jobs at once and the workers
take them in order. Cancelling fails the run's jobs that have not started (the worker only claims
queued jobs) and marks their latents cancelled; a job already running finishes, and its latents keep
their results (a finished explanation of a decoder row is worth keeping, unlike a discarded token).
The sweeper sends a job whose message was lost and requeues one whose worker died (the ApiJob's
own life, nlaweb.api.models.ApiJobQuerySet); its latents stay running meanwhile.

A LatentExplanation row copies its job's outcome once the job has ended (`settle`): until then the
job row is the truth, so a lost progress hint costs nothing."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from nlaweb.api.models import ApiJob
from nlaweb.jobs.broker import enqueue
from nlaweb.latents.attached import SourceSae
from nlaweb.latents.models import LatentExplanation, LatentRun
from workers.contracts import TASK_VECTORS

#: Greedy, so an explanation of a decoder row is one fixed text (the page shows it to everyone).
SETTINGS: dict[str, Any] = {"temperature": 0.0, "max_new_tokens": None, "seed": 0}
LATENTS_PER_JOB = 8
MAX_LATENTS_PER_RUN = 64
Status = LatentExplanation.Status
IN_FLIGHT = (Status.QUEUED, Status.RUNNING)
CANCELLED_JOB = "Cancelled before it started."


class LatentsRejected(Exception):
    """A request the page answers with this sentence."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_indices(text: str, d_sae: int, rng: random.Random | None = None) -> list[int]:
    """`"3, 7, 10-20"`, `"first 16"` or `"random 16"` → latent indices (in order, no repeats)."""
    text = text.strip().lower()
    if match := re.fullmatch(r"(first|random)\s+(\d+)", text):
        count = int(match[2])
        _check_count(count)
        if match[1] == "first":
            return list(range(min(count, d_sae)))
        pick = rng or random.Random()  # noqa: S311 (a sample of latents, not a secret)
        return sorted(pick.sample(range(d_sae), min(count, d_sae)))
    indices: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not (found := re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)):
            raise LatentsRejected(
                f"'{part}' is not a latent index or range; write e.g. 3, 7, 10-20 or random 16."
            )
        low, high = int(found[1]), int(found[2] or found[1])
        if high < low or high >= d_sae:
            raise LatentsRejected(f"This SAE has latents 0 to {d_sae - 1}; '{part}' is outside.")
        indices += [i for i in range(low, high + 1) if i not in indices]
        _check_count(len(indices))
    if not indices:
        raise LatentsRejected("Name the latents to explain: e.g. 3, 7, 10-20 or random 16.")
    return indices


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_LATENTS_PER_RUN:
        raise LatentsRejected(
            f"One run explains 1 to {MAX_LATENTS_PER_RUN} latents; {count} were asked for."
        )


def vector(source: SourceSae, index: int) -> list[float]:
    """Latent `index`'s decoder row at the source's norm (SaeRefused when it has no direction)."""
    assert source.sae is not None  # callers check: a source without an SAE has no latents page
    return [float(x) * source.scale for x in source.sae.direction(index)]


def explain_latents(
    user: Any, source: SourceSae, indices: Sequence[int], run: LatentRun | None = None
) -> list[LatentExplanation]:
    """The rows of `indices`: those explained or in flight as they are, the others (new, failed,
    cancelled) queued in jobs of LATENTS_PER_JOB."""
    vectors = {i: vector(source, i) for i in indices}  # refuses a zero row before anything is saved
    with transaction.atomic():
        existing = {
            row.index: row
            for row in LatentExplanation.objects.select_for_update().filter(
                source_id=source.source.id, index__in=list(indices)
            )
        }
        wanted = [i for i in indices if i not in existing or _needs_work(existing[i])]
        for start in range(0, len(wanted), LATENTS_PER_JOB):
            chunk = wanted[start : start + LATENTS_PER_JOB]
            _queue_chunk(user, source, chunk, [vectors[i] for i in chunk], run)
    return list(rows_of(source.source.id, indices))


def _needs_work(row: LatentExplanation) -> bool:
    return row.status in (Status.FAILED, Status.CANCELLED)


def _queue_chunk(
    user: Any,
    source: SourceSae,
    chunk: list[int],
    vectors: list[list[float]],
    run: LatentRun | None,
) -> None:
    payload = {
        "vectors": vectors,
        "settings": SETTINGS,
        "latents": chunk,
        "run": str(run.pk) if run else None,
    }
    job = ApiJob.objects.create(
        owner=user, kind=ApiJob.Kind.EXPLAIN_VECTORS, source_id=source.source.id, payload=payload
    )
    for slot, index in enumerate(chunk):
        LatentExplanation.objects.update_or_create(
            source_id=source.source.id,
            index=index,
            defaults={
                "status": Status.QUEUED,
                "job": job,
                "slot": slot,
                "run": run,
                "scale": source.scale,
                "description": "",
                "error": "",
                "relative_mse": None,
                "fve": None,
                "cosine": None,
                "confidence": "",
                "finished_at": None,
            },
        )
    enqueue(TASK_VECTORS, str(job.pk))


def start_run(user: Any, source: SourceSae, indices: Sequence[int]) -> LatentRun:
    """A batch run of `indices` (at most MAX_LATENTS_PER_RUN), all its jobs queued."""
    _check_count(len(indices))
    with transaction.atomic():
        run = LatentRun.objects.create(
            owner=user, source_id=source.source.id, indices=list(indices)
        )
        explain_latents(user, source, indices, run)
    return run


def rows_of(source_id: str, indices: Iterable[int]) -> list[LatentExplanation]:
    """The settled rows of these latents (those that have one), in the order asked."""
    wanted = list(indices)
    rows = {
        r.index: r
        for r in LatentExplanation.objects.select_related("job").filter(
            source_id=source_id, index__in=wanted
        )
    }
    found = [rows[i] for i in wanted if i in rows]
    settle(found)
    return found


def settle(rows: Iterable[LatentExplanation]) -> None:
    """Copy the outcome of each in-flight row's job into it once the job has ended (or started)."""
    for row in rows:
        job = row.job
        if not row.in_flight or job is None:
            continue
        if job.status == ApiJob.Status.RUNNING and row.status == Status.QUEUED:
            _save(row, status=Status.RUNNING)
        elif job.status == ApiJob.Status.DONE:
            _save(row, status=Status.DONE, **_result(job, row.slot))
        elif job.status == ApiJob.Status.FAILED:
            cancelled = job.error == CANCELLED_JOB
            _save(row, status=Status.CANCELLED if cancelled else Status.FAILED, error=job.error)


def _result(job: ApiJob, slot: int) -> dict[str, Any]:
    result = (job.result or {}).get("results", [])[slot]
    return {
        "description": result["description"],
        "truncated": bool(result.get("truncated")),
        "relative_mse": result.get("relative_mse"),
        "fve": result.get("fve"),
        "cosine": result.get("cosine_similarity"),
        "confidence": result.get("confidence") or "",
    }


def _save(row: LatentExplanation, **fields: Any) -> None:
    """Update the row only if it still belongs to the same job (a re-queue may have moved it)."""
    if fields.get("status") in (Status.DONE, Status.FAILED, Status.CANCELLED):
        fields["finished_at"] = timezone.now()
    LatentExplanation.objects.filter(pk=row.pk, job_id=row.job_id, status__in=IN_FLIGHT).update(
        **fields
    )
    for name, value in fields.items():
        setattr(row, name, value)


@dataclass(frozen=True)
class RunProgress:
    done: int
    failed: int
    stopped: int  # latents cancelled before they started
    total: int
    cancelled: bool

    @property
    def finished(self) -> bool:
        return self.cancelled or self.done + self.failed + self.stopped >= self.total


def progress(run: LatentRun, rows: Sequence[LatentExplanation]) -> RunProgress:
    """How many of the run's latents are explained, failed, or were cancelled before they started."""
    count = {status: sum(1 for r in rows if r.status == status) for status in Status}
    return RunProgress(
        count[Status.DONE],
        count[Status.FAILED],
        count[Status.CANCELLED],
        len(run.indices),
        run.cancelled,
    )


def cancel_run(run: LatentRun) -> LatentRun:
    """Queue nothing more: the run's jobs that have not started fail as cancelled, and so do their
    latents; running jobs finish."""
    with transaction.atomic():
        run = LatentRun.objects.select_for_update().get(pk=run.pk)
        run.cancelled = True
        run.save(update_fields=["cancelled"])
        jobs = list(
            ApiJob.objects.filter(
                kind=ApiJob.Kind.EXPLAIN_VECTORS,
                status=ApiJob.Status.QUEUED,
                payload__run=str(run.pk),
            ).values_list("pk", flat=True)
        )
        ApiJob.objects.filter(pk__in=jobs).cancel(CANCELLED_JOB, timezone.now())
        LatentExplanation.objects.filter(job_id__in=jobs, status=Status.QUEUED).update(
            status=Status.CANCELLED, error=CANCELLED_JOB, finished_at=timezone.now()
        )
    return run


SORTS = {
    "index": lambda r: r.index,
    "relative_mse": lambda r: (r.relative_mse is None, r.relative_mse or 0.0),
    "fve": lambda r: (r.fve is None, -(r.fve or 0.0)),
    "explanation": lambda r: (not r.description, r.description.lower()),
    "status": lambda r: r.status,
}


def sorted_rows(
    rows: Sequence[LatentExplanation], key: str, descending: bool
) -> list[LatentExplanation]:
    """Rows sorted by one of SORTS (unknown keys sort by index); rows without a score sort last."""
    order = SORTS.get(key, SORTS["index"])
    return sorted(rows, key=order, reverse=descending)
