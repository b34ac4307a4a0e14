"""How a worker's job takes rows (workers/store.py on PostgreSQL): batch-mates in turns over people,
a redelivered job taking its rows back, a row that workers died on running alone and then failing
with a sentence, the heartbeat, and results that a late failure never undoes."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections, transaction
from django.utils import timezone

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, Message
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings, request_explanations
from nlaweb.jobs import broker as jobs
from nlaweb.jobs.django_store import DjangoStore
from nlaweb.jobs.liveness import explanation_gave_up, reply_gave_up
from tests.factories import snapshot_of
from tests.live import wait_until
from tests.personas import make_persona
from tests.queues import memory_broker, sent
from workers.contracts import TASK_EXPLAIN

pytestmark = pytest.mark.django_db(transaction=True)  # the store runs outside any test transaction


@pytest.fixture
def queue(monkeypatch):
    """Every job of these tests, sent by a commit or by the store, goes to an in-process broker."""
    broker = memory_broker()
    monkeypatch.setattr(jobs, "BROKER", broker)
    return broker


def _conversation(name: str, n_tokens: int = 40) -> Conversation:
    conversation = start_conversation(make_persona(name).user)
    snapshot_of(conversation, [("user", "My cat", n_tokens)])
    return conversation


def _rows(conversation: Conversation, positions: list[int], **fields: Any) -> list[Explanation]:
    snapshot = conversation.snapshots.get()
    return [
        Explanation.objects.create(
            snapshot=snapshot,
            position=p,
            source_id=snapshot.source_id,
            settings_key=ExplainSettings().key(),
            settings=ExplainSettings().as_dict(),
            **fields,
        )
        for p in positions
    ]


def _ids(rows: list[Explanation]) -> list[str]:
    return [str(r.pk) for r in rows]


def _owner_of(explanation_id: str) -> str:
    return Explanation.objects.get(pk=explanation_id).snapshot.conversation.owner.username


def test_batch_mates_are_taken_in_turns_over_people_so_a_flood_cannot_fill_a_batch(settings, queue):
    """192 rows of one person queued before one row of a second and two of a third: the first job
    (the flood's own) takes each person's oldest rows in turn, so the others' rows are in it. With
    one job running at a time, their wait is at most the batch in flight plus their own."""
    settings.MAX_ROWS_IN_FLIGHT_PER_USER = 192
    flood = _conversation("flood", n_tokens=200)
    snapshot = flood.snapshots.get()
    for start in range(0, 192, 16):
        request_explanations(snapshot, list(range(start, start + 16)))
    flood_jobs = sent(queue)
    assert len(flood_jobs) == 12
    [bob_row] = _rows(_conversation("bob"), [5])
    carol_rows = _rows(_conversation("carol"), [7, 3])

    job = DjangoStore(queue=queue).explain_job(flood_jobs[0][1][0])

    owners = [_owner_of(i) for i in job.explanation_ids]
    assert {name: owners.count(name) for name in set(owners)} == {"flood": 13, "bob": 1, "carol": 2}
    assert str(bob_row.pk) in job.explanation_ids
    assert set(_ids(carol_rows)) <= set(job.explanation_ids)
    # The flood's own rows come oldest first; the ones left wait for the flood's later jobs.
    flood_taken = [i for i in job.explanation_ids if _owner_of(i) == "flood"]
    positions = sorted(Explanation.objects.get(pk=i).position for i in flood_taken)
    assert positions == list(range(13))


def test_every_queued_row_is_taken_by_some_job_when_batches_mix_people(settings, queue):
    """Jobs whose own rows went into earlier batches still take a batch of what waits: as many jobs
    as requests always explain every row (none is stranded without a message)."""
    settings.MAX_ROWS_IN_FLIGHT_PER_USER = 64
    for name in ("ann", "ben", "cy"):
        snapshot = _conversation(name).snapshots.get()
        request_explanations(snapshot, list(range(0, 16)))
        request_explanations(snapshot, list(range(16, 21)))
    messages = [args[0] for _, args in sent(queue)]
    assert len(messages) == 6
    store = DjangoStore(queue=queue)
    for ids in messages:
        job = store.explain_job(ids)
        if job is not None:
            for explanation_id in job.explanation_ids:
                store.finish_explanation(explanation_id, {"text": "x"})
    assert set(Explanation.objects.values_list("status", flat=True)) == {"done"}


def test_a_job_takes_a_full_batch_past_the_rows_another_worker_is_taking(queue):
    """Another worker's claim holds the oldest 16 rows (locked, not yet marked running): this job
    skips them and takes the next 16, instead of finding nothing and leaving rows without a job."""
    rows = _rows(_conversation("ada", n_tokens=40), list(range(32)))
    holding, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        try:
            with transaction.atomic():
                list(Explanation.objects.select_for_update().filter(pk__in=_ids(rows[:16])))
                holding.set()
                release.wait(30)
        finally:
            holding.set()
            connections.close_all()

    other = threading.Thread(target=other_worker)
    other.start()
    try:
        assert holding.wait(30)
        job = DjangoStore(queue=queue).explain_job(_ids(rows[:16]))
    finally:
        release.set()
        other.join(30)
    assert sorted(job.explanation_ids) == sorted(_ids(rows[16:]))


def test_a_redelivered_job_takes_its_rows_back_and_runs_one_alone(queue):
    rows = _rows(_conversation("ada"), [2, 4, 6])
    first_run = DjangoStore(job_id="job-1", queue=queue).explain_job(_ids(rows))
    assert first_run.explanation_ids == _ids(rows)
    assert DjangoStore(job_id="job-2", queue=queue).explain_job(_ids(rows)) is None  # held, alive

    # job-1's worker was killed; the broker hands its message (same task id) to a new process.
    again = DjangoStore(job_id="job-1", queue=queue).explain_job(_ids(rows))

    assert again.explanation_ids == [str(rows[0].pk)]
    states = {
        str(e.pk): (e.status, e.attempts, e.job_id)
        for e in Explanation.objects.order_by("position")
    }
    assert list(states.values()) == [("running", 2, "job-1"), ("queued", 1, ""), ("queued", 1, "")]
    # The others go back as one job each, so a row that kills its worker takes no other with it.
    assert sent(queue) == [(TASK_EXPLAIN, [[str(rows[1].pk)]]), (TASK_EXPLAIN, [[str(rows[2].pk)]])]
    assert Explanation.objects.filter(sent_at__isnull=False).count() == 2


def test_a_row_that_killed_its_worker_twice_fails_with_a_sentence_instead_of_looping(queue):
    [row] = _rows(_conversation("ada"), [2])
    DjangoStore(job_id="job-1", queue=queue).explain_job([str(row.pk)])
    DjangoStore(job_id="job-1", queue=queue).explain_job([str(row.pk)])
    assert Explanation.objects.get(pk=row.pk).attempts == 2

    assert DjangoStore(job_id="job-1", queue=queue).explain_job([str(row.pk)]) is None

    row.refresh_from_db()
    assert (row.status, row.error) == ("failed", explanation_gave_up(2))
    assert sent(queue) == []


def test_a_row_a_worker_died_on_is_never_a_batch_mate(queue):
    [suspect] = _rows(_conversation("ada"), [2], attempts=1)
    [fresh] = _rows(_conversation("bob"), [3])
    job = DjangoStore(queue=queue).explain_job([str(fresh.pk)])
    assert job.explanation_ids == [str(fresh.pk)]
    assert DjangoStore(queue=queue).explain_job([str(suspect.pk)]).explanation_ids == [
        str(suspect.pk)
    ]


def test_a_running_row_is_taken_by_another_job_only_once_its_heartbeat_stopped(settings, queue):
    [row] = _rows(_conversation("ada"), [2])
    DjangoStore(job_id="job-1", queue=queue).explain_job([str(row.pk)])
    assert DjangoStore(job_id="job-2", queue=queue).explain_job([str(row.pk)]) is None
    silent = timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT_S + 1)
    Explanation.objects.filter(pk=row.pk).update(heartbeat_at=silent)
    job = DjangoStore(job_id="job-2", queue=queue).explain_job([str(row.pk)])
    assert job.explanation_ids == [str(row.pk)]
    assert Explanation.objects.get(pk=row.pk).job_id == "job-2"


def test_the_heartbeat_keeps_a_jobs_rows_and_reply_alive_while_it_runs(settings, queue):
    settings.HEARTBEAT_INTERVAL_S = 1
    conversation = _conversation("ada")
    [row] = _rows(conversation, [2])
    reply = Message.objects.create(conversation=conversation, role="assistant", status="generating")
    store = DjangoStore(job_id="job-1", queue=queue)
    store.explain_job([str(row.pk)])
    store.reply_job(str(reply.pk))
    long_ago = timezone.now() - timedelta(hours=1)
    Explanation.objects.filter(pk=row.pk).update(heartbeat_at=long_ago)
    Message.objects.filter(pk=reply.pk).update(heartbeat_at=long_ago)
    with store.heartbeat():
        wait_until(
            lambda: (
                Explanation.objects.get(pk=row.pk).heartbeat_at > long_ago
                and Message.objects.get(pk=reply.pk).heartbeat_at > long_ago
            ),
            10,
            "a heartbeat",
        )


def test_a_reply_is_taken_by_one_job_back_by_its_own_and_failed_after_two_deaths(settings):
    reply = Message.objects.create(
        conversation=_conversation("ada"), role="assistant", status="generating"
    )
    assert DjangoStore(job_id="job-1").reply_job(str(reply.pk)) is not None
    assert DjangoStore(job_id="job-2").reply_job(str(reply.pk)) is None  # a live job has it
    assert DjangoStore(job_id="job-1").reply_job(str(reply.pk)) is not None  # redelivered
    assert DjangoStore(job_id="job-1").reply_job(str(reply.pk)) is None
    reply.refresh_from_db()
    assert (reply.status, reply.attempts, reply.error) == ("failed", 2, reply_gave_up(2))


def test_a_late_failure_never_undoes_a_stored_result(queue):
    rows = _rows(_conversation("ada"), [2, 4])
    store = DjangoStore(queue=queue)
    job = store.explain_job(_ids(rows))
    store.finish_explanation(job.explanation_ids[0], {"text": "A cat."})
    store.fail_explanations(job.explanation_ids, "The worker failed while explaining this token.")
    first, second = Explanation.objects.order_by("position")
    assert (first.status, first.text, first.error) == ("done", "A cat.", "")
    assert (second.status, second.error) == (
        "failed",
        "The worker failed while explaining this token.",
    )


def test_queue_places_count_in_the_order_a_job_takes_the_rows():
    flood = _rows(_conversation("flood"), [3, 4, 5, 6])
    _rows(_conversation("other"), [7])
    _rows(_conversation("late"), [8, 9])
    places = Explanation.objects.queue_places(flood[0].source_id)
    with transaction.atomic():
        claim = Explanation.objects.claim([str(flood[0].pk)], "job-1", 16, timezone.now())
    assert sorted(places, key=places.__getitem__) == _ids(claim.rows)
    assert [_owner_of(pk) for pk in _ids(claim.rows)][:4] == ["flood", "other", "late", "flood"]
