"""A heartbeat that could not be written is no evidence of death: the sweeper judges silence only
over time it watched the database answer (nlaweb.jobs.sweep.Watch), and a job the sweeper did take for
dead cannot overwrite the job that took its work (the job id on the row fences it). PostgreSQL, an
injected time, kombu's in-process broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError, connection

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, Message
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from nlaweb.jobs.django_store import DjangoStore
from nlaweb.jobs.sweep import Watch, sweep
from tests.factories import snapshot_of
from tests.live import free_port
from tests.queues import memory_broker

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _silent_reply(
    conversation: Conversation, job_id: str = "live-job", attempts: int = 1
) -> Message:
    user = Message.objects.create(conversation=conversation, role="user", content="My cat")
    reply = Message.objects.create(
        conversation=conversation,
        parent=user,
        role="assistant",
        status="generating",
        content="Cats na",
        heartbeat_at=T0,
        attempts=attempts,
        job_id=job_id,
    )
    conversation.head = reply
    conversation.save()
    return reply


def _silent_row(conversation: Conversation, job_id: str = "live-job") -> Explanation:
    snapshot = snapshot_of(conversation)
    return Explanation.objects.create(
        snapshot=snapshot,
        position=3,
        source_id=snapshot.source_id,
        settings_key=ExplainSettings().key(),
        settings=ExplainSettings().as_dict(),
        status="running",
        stage="verbalizing",
        heartbeat_at=T0,
        attempts=1,
        job_id=job_id,
    )


@pytest.mark.django_db
def test_after_an_outage_silence_is_judged_only_once_the_database_answered_a_whole_timeout(
    owner, settings
):
    """The worker's beats failed during the outage; the sweeper's first passes after it leave its
    work alone, and a worker that beats again (as a live one does) keeps it."""
    settings.HEARTBEAT_INTERVAL_S, settings.HEARTBEAT_TIMEOUT_S = 10, 30
    settings.SWEEP_INTERVAL_S = 10
    conversation = start_conversation(owner.user)
    reply, row = _silent_reply(conversation), _silent_row(conversation)
    watch, queue = Watch(), memory_broker()
    sweep(T0, queue, watch)
    watch.lost()  # the database went down after this pass
    back = T0 + _s(90)  # the outage outlasted the heartbeat timeout
    for seconds in (0, 10, 20):  # passes every sweep interval once it is back
        report = sweep(back + _s(seconds), queue, watch)
        assert report.watching and report.requeued == report.replies_requeued == []
    assert Message.objects.get(pk=reply.pk).content == "Cats na"
    Explanation.objects.filter(pk=row.pk).update(heartbeat_at=back + _s(5))  # it beats again
    Message.objects.filter(pk=reply.pk).update(heartbeat_at=back + _s(5))
    report = sweep(back + _s(30), queue, watch)
    assert not report.watching and report.requeued == report.replies_requeued == []
    report = sweep(back + _s(40), queue, watch)  # silent again, the database answering
    assert (report.requeued, report.replies_requeued) == ([str(row.pk)], [str(reply.pk)])


@pytest.mark.django_db
def test_a_pass_that_cannot_reach_the_database_marks_the_watch_lost(owner, settings):
    watch = Watch()
    for seconds in range(0, settings.HEARTBEAT_TIMEOUT_S + 1, settings.SWEEP_INTERVAL_S):
        sweep(T0 + _s(seconds), memory_broker(), watch)
    assert watch.judges(T0 + _s(settings.HEARTBEAT_TIMEOUT_S))
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())  # nothing listens there: refused
    try:
        with pytest.raises(OperationalError):
            sweep(T0 + _s(settings.HEARTBEAT_TIMEOUT_S + 1), memory_broker(), watch)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    assert not watch.judges(T0 + _s(settings.HEARTBEAT_TIMEOUT_S * 10))


def test_a_gap_between_passes_that_could_hide_an_outage_starts_the_watch_again(settings):
    settings.HEARTBEAT_INTERVAL_S, settings.HEARTBEAT_TIMEOUT_S = 10, 30
    settings.SWEEP_INTERVAL_S = 10
    watch = Watch()
    watch.answered(T0)
    assert not watch.judges(T0 + _s(29))  # a sweeper that just started judges nobody yet
    for seconds in range(10, 41, 10):  # passes every sweep interval: one unbroken watch
        watch.answered(T0 + _s(seconds))
    assert watch.judges(T0 + _s(40))
    watch.answered(T0 + _s(40 + 21))  # 21 s without a pass: an outage of 20 s silences a beat
    assert not watch.judges(T0 + _s(61)) and not watch.judges(T0 + _s(90))
    assert watch.judges(T0 + _s(91))


def test_a_sweeper_that_has_not_seen_the_database_judges_nobody():
    assert not Watch().judges(T0)


@pytest.mark.django_db(transaction=True)  # the worker's store closes stale connections
def test_a_job_taken_for_dead_cannot_overwrite_the_reply_another_job_took(owner):
    reply = _silent_reply(start_conversation(owner.user), job_id="", attempts=0)
    stale = DjangoStore("stale-job")
    assert stale.reply_job(str(reply.pk)) is not None
    Message.objects.filter(pk=reply.pk).update(content="", job_id="", heartbeat_at=None)  # swept
    fresh = DjangoStore("fresh-job")
    assert fresh.reply_job(str(reply.pk)) is not None
    stale.finish_reply(str(reply.pk), "Cats nap (stale)")
    stale.fail_reply(str(reply.pk), "Cats nap (stale)", "late failure")
    assert Message.objects.get(pk=reply.pk).status == "generating"
    fresh.finish_reply(str(reply.pk), "Cats nap.")
    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.job_id, reply.attempts) == (
        "done",
        "Cats nap.",
        "fresh-job",
        2,
    )


@pytest.mark.django_db(transaction=True)
def test_a_reply_handed_back_keeps_the_text_its_live_worker_finished_and_is_not_written_again(
    owner,
):
    reply = _silent_reply(start_conversation(owner.user), job_id="", attempts=0)
    live = DjangoStore("live-job")
    assert live.reply_job(str(reply.pk)) is not None
    Message.objects.filter(pk=reply.pk).update(content="", job_id="", heartbeat_at=None)  # swept
    live.finish_reply(str(reply.pk), "Cats nap.")
    assert DjangoStore("resent-job").reply_job(str(reply.pk)) is None  # nothing left to write
    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.attempts) == ("done", "Cats nap.", 1)


@pytest.mark.django_db(transaction=True)
def test_an_explanation_another_job_took_keeps_that_jobs_result(owner):
    row = _silent_row(start_conversation(owner.user), job_id="stale-job")
    Explanation.objects.filter(pk=row.pk).update(job_id="fresh-job")  # swept, then taken again
    DjangoStore("stale-job").finish_explanation(str(row.pk), {"text": "stale"})
    DjangoStore("stale-job").fail_explanations([str(row.pk)], "late failure")
    assert Explanation.objects.get(pk=row.pk).status == "running"
    DjangoStore("fresh-job").finish_explanation(str(row.pk), {"text": "A cat."})
    row.refresh_from_db()
    assert (row.status, row.text, row.error) == ("done", "A cat.", "")


@pytest.mark.django_db(transaction=True)
def test_an_explanation_handed_back_takes_its_live_workers_result(owner):
    row = _silent_row(start_conversation(owner.user), job_id="live-job")
    Explanation.objects.filter(pk=row.pk).update(status="queued", job_id="")  # swept
    DjangoStore("live-job").finish_explanation(str(row.pk), {"text": "A cat."})
    row.refresh_from_db()
    assert (row.status, row.text) == ("done", "A cat.")
