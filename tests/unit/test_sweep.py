"""The sweeper at an injected time: rows and replies whose worker went silent are queued again or
failed with a sentence, and jobs that never reached the broker (or lost their message) are sent.
PostgreSQL, and kombu's in-process broker whose messages the test reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nlaweb.chat.conversation import send_message, start_conversation
from nlaweb.chat.models import Conversation, Message
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from nlaweb.jobs.liveness import explanation_gave_up, reply_gave_up
from nlaweb.jobs.sweep import sweep
from tests.factories import snapshot_of
from tests.queues import down_broker, memory_broker, sent
from workers.contracts import TASK_EXPLAIN, TASK_REPLY

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def queue():
    return memory_broker()


def _timeout(settings) -> timedelta:
    return timedelta(seconds=settings.HEARTBEAT_TIMEOUT_S)


def _row(conversation: Conversation, position: int, **fields: Any) -> Explanation:
    snapshot = conversation.snapshots.first() or snapshot_of(conversation)
    settings = ExplainSettings(seed=fields.pop("seed", 0))
    return Explanation.objects.create(
        snapshot=snapshot,
        position=position,
        source_id=snapshot.source_id,
        settings_key=settings.key(),
        settings=settings.as_dict(),
        **fields,
    )


def _placeholder(conversation: Conversation, **fields: Any) -> Message:
    user = Message.objects.create(conversation=conversation, role="user", content="My cat")
    reply = Message.objects.create(
        conversation=conversation, parent=user, role="assistant", status="generating", **fields
    )
    conversation.head = reply
    conversation.save()
    return reply


def test_a_running_row_whose_worker_went_silent_is_queued_again_and_sent_alone(
    owner, queue, settings
):
    row = _row(
        start_conversation(owner.user),
        3,
        status="running",
        stage="verbalizing",
        heartbeat_at=T0,
        attempts=1,
        job_id="dead-job",
    )
    still_alive = sweep(T0 + _timeout(settings) - timedelta(seconds=1), queue)
    assert still_alive.summary() == "" and sent(queue) == []
    assert Explanation.objects.get(pk=row.pk).status == "running"

    report = sweep(T0 + _timeout(settings) + timedelta(seconds=1), queue)

    row.refresh_from_db()
    assert (row.status, row.stage, row.job_id, row.attempts) == ("queued", "queued", "", 1)
    assert row.sent_at == T0 + _timeout(settings) + timedelta(seconds=1)
    assert report.requeued == report.sent == [str(row.pk)]
    assert sent(queue) == [(TASK_EXPLAIN, [[str(row.pk)]])]


def test_a_row_that_workers_died_on_twice_fails_with_a_sentence(owner, queue, settings):
    assert settings.JOB_MAX_ATTEMPTS == 2
    row = _row(start_conversation(owner.user), 3, status="running", heartbeat_at=T0, attempts=2)
    report = sweep(T0 + _timeout(settings) * 2, queue)
    row.refresh_from_db()
    assert (row.status, row.stage) == ("failed", "failed")
    assert row.error == (
        "The worker stopped 2 times while explaining this token (it was killed, perhaps for lack "
        "of memory); try fewer tokens or a shorter conversation."
    )
    assert row.error == explanation_gave_up(2)
    assert report.failed == [str(row.pk)] and sent(queue) == []


def test_a_reply_whose_worker_went_silent_is_written_again(owner, queue, settings):
    conversation = start_conversation(owner.user)
    reply = _placeholder(
        conversation, content="Cats na", heartbeat_at=T0, attempts=1, job_id="dead-job"
    )
    now = T0 + _timeout(settings) + timedelta(seconds=1)
    report = sweep(now, queue)
    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.job_id, reply.sent_at) == ("generating", "", "", now)
    assert report.replies_requeued == report.replies_sent == [str(reply.pk)]
    assert sent(queue) == [(TASK_REPLY, [str(reply.pk)])]


def test_a_reply_that_workers_died_on_twice_fails_and_the_next_message_can_be_sent(
    owner, queue, settings, django_capture_on_commit_callbacks
):
    conversation = start_conversation(owner.user)
    reply = _placeholder(conversation, content="Cats", heartbeat_at=T0, attempts=2, job_id="dead")
    report = sweep(T0 + _timeout(settings) * 2, queue)
    reply.refresh_from_db()
    assert (reply.status, reply.content) == ("failed", "Cats")
    assert reply.error == (
        "The reply could not be written (the worker stopped 2 times while writing it); send "
        "again or regenerate."
    )
    assert reply.error == reply_gave_up(2)
    assert report.replies_failed == [str(reply.pk)] and sent(queue) == []
    with django_capture_on_commit_callbacks() as callbacks:
        next_reply = send_message(conversation, "Again, please")
    assert next_reply.parent.parent_id == reply.pk and len(callbacks) == 1


def test_a_placeholder_no_worker_took_yet_is_not_taken_for_a_dead_one(owner, queue, settings):
    reply = _placeholder(start_conversation(owner.user), sent_at=T0)
    report = sweep(T0 + timedelta(seconds=settings.SWEEP_RESEND_AFTER_S - 1), queue)
    assert report.summary() == "" and sent(queue) == []
    assert Message.objects.get(pk=reply.pk).status == "generating"


def test_jobs_that_never_reached_the_broker_are_sent_by_source_and_settings(owner, queue):
    conversation = start_conversation(owner.user)
    fresh = [_row(conversation, p) for p in range(20)]
    other_settings = _row(conversation, 30, seed=7)
    retried = _row(conversation, 31, attempts=1)
    already_sent = _row(conversation, 32, sent_at=T0)
    reply = _placeholder(conversation)

    report = sweep(T0, queue)

    jobs = sent(queue)
    assert (
        jobs
        == [
            (TASK_REPLY, [str(reply.pk)]),
            (TASK_EXPLAIN, [[str(retried.pk)]]),  # a row a worker died on goes alone
            (TASK_EXPLAIN, [[str(r.pk) for r in fresh[:16]]]),
            (TASK_EXPLAIN, [[str(r.pk) for r in fresh[16:]]]),
            (TASK_EXPLAIN, [[str(other_settings.pk)]]),
        ]
    )
    assert str(already_sent.pk) not in report.sent
    assert not Explanation.objects.filter(sent_at__isnull=True).exists()
    assert Message.objects.get(pk=reply.pk).sent_at == T0


def test_with_the_broker_down_nothing_is_lost_and_a_later_pass_sends(owner, queue):
    conversation = start_conversation(owner.user)
    row = _row(conversation, 4)
    reply = _placeholder(conversation)
    report = sweep(T0, down_broker())
    assert report.queue_down and report.sent == report.replies_sent == []
    assert Explanation.objects.get(pk=row.pk).sent_at is None
    assert Message.objects.get(pk=reply.pk).sent_at is None

    report = sweep(T0 + timedelta(seconds=10), queue)
    assert not report.queue_down
    assert sent(queue) == [(TASK_REPLY, [str(reply.pk)]), (TASK_EXPLAIN, [[str(row.pk)]])]


def test_a_row_whose_message_was_lost_is_sent_again_only_once_the_queue_is_empty(
    owner, queue, settings
):
    row = _row(start_conversation(owner.user), 4, sent_at=T0)
    later = T0 + timedelta(seconds=settings.SWEEP_RESEND_AFTER_S + 1)
    queue.celery.send_task("workers.explain", args=[["someone-elses"]], queue="gpu")
    assert sweep(later, queue).sent == []  # a job still waits: the row's may be that one
    assert len(sent(queue)) == 1
    assert sweep(later, queue).sent == [str(row.pk)]
    assert sent(queue) == [(TASK_EXPLAIN, [[str(row.pk)]])]
    assert Explanation.objects.get(pk=row.pk).sent_at == later
