"""An API job's life (raw vectors, scores, latents, tokenizing) on PostgreSQL, at an injected time:
a running job whose worker went silent is queued again and sent, or failed with a sentence after
JOB_MAX_ATTEMPTS (which the API and the latents page show); one that never reached the broker is
sent, one whose message was lost is sent again once the queue is empty; a worker taken for dead
cannot overwrite the job another worker took since; and the worker's heartbeat keeps its job alive.
kombu's in-process broker, whose messages the test reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from nlaweb.api.inputs import Turn, job_failure, prepare_input
from nlaweb.api.models import WORKER_LOST, ApiJob
from nlaweb.jobs.api_store import ApiStore
from nlaweb.jobs.liveness import api_job_gave_up
from nlaweb.jobs.sweep import sweep
from nlaweb.latents.batches import rows_of
from nlaweb.latents.models import LatentExplanation
from tests.personas import Persona
from tests.queues import memory_broker, sent
from workers.contracts import TASK_TOKENIZE, TASK_VECTORS

pytestmark = pytest.mark.django_db

#: The store (the worker's side) closes old connections and runs outside any test transaction.
STORE = pytest.mark.django_db(transaction=True)
T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def queue():
    return memory_broker()


def _timeout(settings: Any) -> timedelta:
    return timedelta(seconds=settings.HEARTBEAT_TIMEOUT_S)


def _job(owner: Persona, **fields: Any) -> ApiJob:
    kind = fields.pop("kind", ApiJob.Kind.EXPLAIN_VECTORS)
    payload = {"vectors": [[0.5, 0.5]], "latents": [3]}
    return ApiJob.objects.create(owner=owner.user, kind=kind, source_id="tiny", payload=payload)


def _claim(pk: str, task_id: str, now: datetime) -> ApiJob | None:
    with transaction.atomic():
        return ApiJob.objects.claim(pk, task_id, now)


def _running(owner: Persona, attempts: int = 1, job_id: str = "dead-task") -> ApiJob:
    job = _job(owner)
    ApiJob.objects.filter(pk=job.pk).update(
        status="running", started_at=T0, heartbeat_at=T0, attempts=attempts, job_id=job_id
    )
    return ApiJob.objects.get(pk=job.pk)


def test_a_running_api_job_whose_worker_went_silent_is_queued_and_sent_again(
    owner, queue, settings
):
    job = _running(owner)
    alive = sweep(T0 + _timeout(settings) - timedelta(seconds=1), queue)
    assert alive.summary() == "" and sent(queue) == []

    now = T0 + _timeout(settings) + timedelta(seconds=1)
    report = sweep(now, queue)

    job.refresh_from_db()
    assert (job.status, job.job_id, job.attempts, job.sent_at) == ("queued", "", 1, now)
    assert report.api_jobs_requeued == report.api_jobs_sent == [str(job.pk)]
    assert sent(queue) == [(TASK_VECTORS, [str(job.pk)])]


def test_an_api_job_that_workers_died_on_twice_fails_with_a_sentence_the_api_and_page_show(
    owner, queue, settings
):
    assert settings.JOB_MAX_ATTEMPTS == 2
    job = _running(owner, attempts=2)
    latent = LatentExplanation.objects.create(source_id="tiny", index=3, job=job, status="running")

    report = sweep(T0 + _timeout(settings) * 2, queue)

    job.refresh_from_db()
    assert (job.status, job.error_code, job.job_id) == ("failed", WORKER_LOST, "")
    assert job.error == (
        "The worker stopped 2 times while running this job (it was killed, perhaps for lack of "
        "memory); send fewer or shorter vectors, or try again later."
    )
    assert job.error == api_job_gave_up(2)
    assert report.api_jobs_failed == [str(job.pk)] and sent(queue) == []
    refused = job_failure(job)
    assert (refused.status, refused.detail) == (503, job.error)
    [row] = rows_of("tiny", [latent.index])
    assert (row.status, row.error) == ("failed", job.error)


def test_an_api_job_that_never_reached_the_broker_is_sent_by_its_kind(owner, queue):
    vectors, tokenize = _job(owner), _job(owner, kind=ApiJob.Kind.TOKENIZE)
    report = sweep(T0, queue)
    assert report.api_jobs_sent == [str(vectors.pk), str(tokenize.pk)]
    assert sent(queue) == [(TASK_VECTORS, [str(vectors.pk)]), (TASK_TOKENIZE, [str(tokenize.pk)])]
    assert set(ApiJob.objects.values_list("sent_at", flat=True)) == {T0}
    assert sweep(T0 + timedelta(seconds=1), queue).api_jobs_sent == []


def test_an_api_job_whose_message_was_lost_is_sent_again_only_once_the_queue_is_empty(
    owner, queue, settings
):
    job = _job(owner)
    ApiJob.objects.filter(pk=job.pk).mark_sent(T0)
    later = T0 + timedelta(seconds=settings.SWEEP_RESEND_AFTER_S + 1)
    assert sweep(T0 + timedelta(seconds=1), queue).api_jobs_sent == []  # not long enough
    queue.celery.send_task(TASK_VECTORS, args=["someone-elses"], queue="gpu")
    assert sweep(later, queue).api_jobs_sent == []  # a message waits: it may be this job's
    assert len(sent(queue)) == 1
    assert sweep(later, queue).api_jobs_sent == [str(job.pk)]
    assert sent(queue) == [(TASK_VECTORS, [str(job.pk)])]


@STORE
def test_a_worker_taken_for_dead_cannot_overwrite_the_job_another_worker_took(owner, settings):
    job = _running(owner, job_id="old-task")
    ApiJob.objects.filter(pk=job.pk).requeue()
    taken = _claim(str(job.pk), "new-task", T0)
    assert taken is not None and (taken.status, taken.attempts) == ("running", 2)

    ApiStore(job_id="old-task").finish_api_job(str(job.pk), {"results": ["old"]})
    ApiStore(job_id="old-task").fail_api_job(str(job.pk), "old failure", "WorkerError")
    job.refresh_from_db()
    assert (job.status, job.result, job.error) == ("running", None, "")

    ApiStore(job_id="new-task").finish_api_job(str(job.pk), {"results": ["new"]})
    job.refresh_from_db()
    assert (job.status, job.result, job.job_id) == ("done", {"results": ["new"]}, "new-task")
    ApiStore(job_id="new-task").fail_api_job(str(job.pk), "late", "WorkerError")
    assert ApiJob.objects.get(pk=job.pk).status == "done"  # a late error never undoes a result


@STORE
def test_a_job_handed_back_but_not_taken_again_keeps_the_old_workers_result_once(owner, queue):
    job = _running(owner, job_id="old-task")
    ApiJob.objects.filter(pk=job.pk).requeue()
    ApiStore(job_id="old-task").finish_api_job(str(job.pk), {"results": ["old"]})
    assert ApiJob.objects.get(pk=job.pk).status == "done"
    assert _claim(str(job.pk), "new-task", T0) is None  # its message: a no-op
    assert sweep(T0, queue).api_jobs_sent == []


def test_a_redelivered_job_is_taken_back_and_a_live_workers_job_is_not_taken(owner, settings):
    job = _running(owner, job_id="task-a")
    assert _claim(str(job.pk), "task-b", T0 + timedelta(seconds=1)) is None
    again = _claim(str(job.pk), "task-a", T0 + timedelta(seconds=1))
    assert again is not None and (again.status, again.attempts, again.job_id) == (
        "running",
        2,
        "task-a",
    )
    third = _claim(str(job.pk), "task-a", T0 + timedelta(seconds=2))
    assert third is not None and (third.status, third.error) == ("failed", api_job_gave_up(2))


@STORE
def test_the_workers_heartbeat_keeps_its_job_alive_past_the_timeout(owner, queue, settings):
    job = _job(owner)
    assert _claim(str(job.pk), "live-task", T0) is not None
    store = ApiStore(job_id="live-task")
    beat_at = T0 + _timeout(settings)
    store._beat_rows(beat_at)
    ApiStore(job_id="other-task")._beat_rows(beat_at + _timeout(settings))  # not its job
    report = sweep(beat_at + _timeout(settings) - timedelta(seconds=1), queue)
    assert report.api_jobs_requeued == [] and ApiJob.objects.get(pk=job.pk).status == "running"
    assert ApiJob.objects.get(pk=job.pk).heartbeat_at == beat_at


def test_an_api_input_waits_on_its_pending_tokenize_job_but_not_on_a_silent_one(owner, settings):
    turns = [Turn("user", "My cat loves to sleep")]
    first = prepare_input(owner.user, "tiny", turns, raw=False)
    assert prepare_input(owner.user, "tiny", turns, raw=False).job_id == first.job_id
    silent_since = timezone.now() - _timeout(settings) * 2
    ApiJob.objects.filter(pk=first.job_id).update(status="running", heartbeat_at=silent_since)
    again = prepare_input(owner.user, "tiny", turns, raw=False)
    assert again.job_id is not None and again.job_id != first.job_id
