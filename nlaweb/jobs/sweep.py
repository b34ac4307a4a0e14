"""The sweeper: ends what went silent, so nothing waits for a click.

One pass (`sweep(now)`) does three things, each safe to run twice or in two places at once:

1. a running explanation, generating reply or API job (nlaweb.api.models.ApiJob: raw vectors,
   scores, latents, tokenizing) whose worker stopped beating (killed, its machine gone) is queued
   again, or failed with a sentence once JOB_MAX_ATTEMPTS workers died on it;
2. rows and API jobs whose job never reached the broker (it was down at click or send time) are
   sent;
3. those sent long ago that still wait while the queue is empty lost their message (a broker that
   restarted without its data) and are sent again.

Celery beat runs it every SWEEP_INTERVAL_S in production (task `nlaweb.sweep`, nlaweb/jobs/beat.py);
the embedded mode runs it in a thread of `manage.py serve`. Tests call it with an injected `now`.
The state changes are the models' QuerySet methods; this module only picks the rows.

Step 1 judges only silence this sweeper watched the database answer through (a `Watch`): after an
outage, a worker's heartbeat could not be written, which is no evidence that it died.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from nlaweb.api.models import ApiJob
from nlaweb.chat.models import Message
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.runs import feed_waiting_runs
from nlaweb.jobs.broker import (
    BROKER,
    Job,
    JobQueue,
    QueueUnavailable,
    api_job,
    explanation_jobs,
    send,
)
from nlaweb.jobs.frames import publish, publish_group
from nlaweb.jobs.liveness import api_job_gave_up, explanation_gave_up, gave_up, reply_gave_up
from workers.contracts import (
    TASK_REPLY,
    ApiJobFinished,
    ChatFailed,
    ExplanationFailed,
    ExplanationProgress,
    api_job_group,
)

log = logging.getLogger(__name__)


@dataclass
class Watch:
    """Since when this sweeper has seen the database answer every pass: a silent heartbeat is
    evidence of death only over HEARTBEAT_TIMEOUT_S of that (a live worker beats within
    HEARTBEAT_INTERVAL_S of the database coming back; it could not during the outage).

    A pass that failed (`lost`), or a gap between passes long enough to hide an outage that could
    have silenced a live worker (HEARTBEAT_TIMEOUT_S − HEARTBEAT_INTERVAL_S, and at least two
    sweep intervals), starts the watch again. Kept in the sweeper's process: each sweeper judges by
    what it saw itself, and a restarted one waits a timeout before it judges."""

    since: datetime | None = None
    last_pass: datetime | None = None

    def answered(self, now: datetime) -> None:
        """The database answered the pass at `now`."""
        if self.last_pass is None or self.since is None or now - self.last_pass > _blind_gap():
            self.since = now
        self.last_pass = now

    def lost(self) -> None:
        """A pass could not reach the database."""
        self.since = None

    def judges(self, now: datetime) -> bool:
        """Whether silence up to `now` may be taken for death."""
        timeout = timedelta(seconds=settings.HEARTBEAT_TIMEOUT_S)
        return self.since is not None and now - self.since >= timeout


def _blind_gap() -> timedelta:
    beats = settings.HEARTBEAT_TIMEOUT_S - settings.HEARTBEAT_INTERVAL_S
    return timedelta(seconds=max(beats, 2 * settings.SWEEP_INTERVAL_S))


@dataclass
class SweepReport:
    """Ids of what one pass changed."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    replies_requeued: list[str] = field(default_factory=list)
    replies_failed: list[str] = field(default_factory=list)
    replies_sent: list[str] = field(default_factory=list)
    api_jobs_requeued: list[str] = field(default_factory=list)
    api_jobs_failed: list[str] = field(default_factory=list)
    api_jobs_sent: list[str] = field(default_factory=list)
    runs_fed: int = 0  # whole-message runs that still waited for room under their person's cap
    queue_down: bool = False
    watching: bool = False  # silence not judged: the database has not been watched long enough

    def summary(self) -> str:
        """`requeued 2, sent 2` or '' when nothing changed."""
        counts = {name: len(ids) for name, ids in vars(self).items() if isinstance(ids, list)}
        counts["runs_fed"] = self.runs_fed
        parts = [f"{name.replace('_', ' ')} {n}" for name, n in counts.items() if n]
        flags = ["queue down"] if self.queue_down else []
        watching = ["silence not judged yet (the database was not watched long enough)"]
        return ", ".join(parts + flags + (watching if self.watching else []))


def sweep(now: datetime, queue: JobQueue = BROKER, watch: Watch | None = None) -> SweepReport:
    """One pass of the sweeper at time `now` (see the module's docstring). Without a `watch`, the
    database is taken to have answered all along (tests; a caller that knows)."""
    report = SweepReport()
    try:
        if watch is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            watch.answered(now)
            report.watching = not watch.judges(now)
        if not report.watching:
            _end_silent_explanations(now, report)
            _end_silent_replies(now, report)
            _end_silent_api_jobs(now, report)
        _send_waiting(now, queue, report)
        if not report.queue_down:  # a run's rows would only wait unsent while the queue is down
            report.runs_fed = feed_waiting_runs()
    except DatabaseError:
        if watch is not None:
            watch.lost()
        raise
    return report


def _end_silent_explanations(now: datetime, report: SweepReport) -> None:
    with transaction.atomic():
        rows = list(Explanation.objects.silent(now).locked())
        for row in rows:
            one = Explanation.objects.filter(pk=row.pk)
            if gave_up(row.attempts):
                row.error = explanation_gave_up(row.attempts)
                one.give_up(row.error, now)
                report.failed.append(str(row.pk))
            else:
                one.requeue()
                report.requeued.append(str(row.pk))
    for row in rows:
        conversation_id = str(row.snapshot.conversation_id)
        if str(row.pk) in report.failed:
            publish(conversation_id, ExplanationFailed(explanation_id=str(row.pk), error=row.error))
        else:
            frame = ExplanationProgress(explanation_id=str(row.pk), stage="queued", done=0, total=1)
            publish(conversation_id, frame)


def _end_silent_replies(now: datetime, report: SweepReport) -> None:
    with transaction.atomic():
        # A placeholder no worker took yet is step 2's.
        replies = list(Message.objects.silent(now).select_for_update(skip_locked=True))
        for reply in replies:
            one = Message.objects.filter(pk=reply.pk)
            if gave_up(reply.attempts):
                reply.error = reply_gave_up(reply.attempts)
                one.give_up(reply.error)
                report.replies_failed.append(str(reply.pk))
            else:
                one.requeue()
                report.replies_requeued.append(str(reply.pk))
    for reply in replies:
        if str(reply.pk) in report.replies_failed:
            frame = ChatFailed(message_id=str(reply.pk), error=reply.error)
            publish(str(reply.conversation_id), frame)


def _end_silent_api_jobs(now: datetime, report: SweepReport) -> None:
    with transaction.atomic():
        jobs = list(ApiJob.objects.silent(now).select_for_update(skip_locked=True))
        for job in jobs:
            one = ApiJob.objects.filter(pk=job.pk)
            if gave_up(job.attempts):
                one.give_up(api_job_gave_up(job.attempts), now)
                report.api_jobs_failed.append(str(job.pk))
            else:
                one.requeue()
                report.api_jobs_requeued.append(str(job.pk))
    for pk in report.api_jobs_failed:  # the API request waiting on it answers now
        publish_group(api_job_group(pk), ApiJobFinished(job_id=pk, status="failed"))


@dataclass
class _Waiting:
    """What a pass sends: rows, replies and API jobs whose message never reached the broker or
    was lost."""

    rows: list[Explanation]
    replies: list[Message]
    api_jobs: list[ApiJob]


def _send_waiting(now: datetime, queue: JobQueue, report: SweepReport) -> None:
    waiting = _waiting(now, queue, report)
    try:
        for reply in waiting.replies:
            send(queue, Job(TASK_REPLY, [str(reply.pk)]), now)
            report.replies_sent.append(str(reply.pk))
        for job in explanation_jobs(waiting.rows):
            send(queue, job, now)
            report.sent.extend(job.args[0])
        for api in waiting.api_jobs:
            send(queue, api_job(api), now)
            report.api_jobs_sent.append(str(api.pk))
    except QueueUnavailable:
        report.queue_down = True


def _waiting(now: datetime, queue: JobQueue, report: SweepReport) -> _Waiting:
    """The unsent, and those sent before SWEEP_RESEND_AFTER_S ago when the queue is empty (their
    messages are not there: lost); only the unsent when the queue's depth is unknown (down)."""
    queued = Explanation.objects.filter(status=Explanation.Status.QUEUED)
    untaken = Message.objects.untaken()
    waiting = _Waiting(
        list(queued.filter(sent_at__isnull=True)),
        list(untaken.filter(sent_at__isnull=True)),
        list(ApiJob.objects.unsent().order_by("created_at")),
    )
    before = now - timedelta(seconds=settings.SWEEP_RESEND_AFTER_S)
    lost_rows, lost_replies = queued.filter(sent_at__lt=before), untaken.filter(sent_at__lt=before)
    lost_api_jobs = ApiJob.objects.sent_before(before).order_by("created_at")
    if not (lost_rows.exists() or lost_replies.exists() or lost_api_jobs.exists()):
        return waiting
    depth = queue.depth()
    if depth is None:
        report.queue_down = True
        return _Waiting([], [], [])
    if depth == 0:
        waiting.rows += list(lost_rows)
        waiting.replies += list(lost_replies)
        waiting.api_jobs += list(lost_api_jobs)
    return waiting
