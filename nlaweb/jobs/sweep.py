"""The sweeper: ends what went silent, so nothing waits for a click.

One pass (`sweep(now)`) does three things, each safe to run twice or in two places at once:

1. a running explanation or a generating reply whose worker stopped beating (killed, its machine
   gone) is queued again, or failed with a sentence once JOB_MAX_ATTEMPTS workers died on it;
2. rows whose job never reached the broker (it was down at click or send time) are sent;
3. rows sent long ago that still wait while the queue is empty lost their message (a broker that
   restarted without its data) and are sent again.

Celery beat runs it every SWEEP_INTERVAL_S in production (task `nlaweb.sweep`, nlaweb/jobs/beat.py);
the embedded mode runs it in a thread of `manage.py serve`. Tests call it with an injected `now`.
The state changes are the models' QuerySet methods; this module only picks the rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from nlaweb.chat.models import Message
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.runs import feed_waiting_runs
from nlaweb.jobs.broker import BROKER, Job, JobQueue, QueueUnavailable, explanation_jobs, send
from nlaweb.jobs.frames import publish
from nlaweb.jobs.liveness import explanation_gave_up, gave_up, reply_gave_up
from workers.contracts import TASK_REPLY, ChatFailed, ExplanationFailed, ExplanationProgress

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """Ids of what one pass changed."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    replies_requeued: list[str] = field(default_factory=list)
    replies_failed: list[str] = field(default_factory=list)
    replies_sent: list[str] = field(default_factory=list)
    runs_fed: int = 0  # whole-message runs that still waited for room under their person's cap
    queue_down: bool = False

    def summary(self) -> str:
        """`requeued 2, sent 2` or '' when nothing changed."""
        counts = {name: len(ids) for name, ids in vars(self).items() if isinstance(ids, list)}
        counts["runs_fed"] = self.runs_fed
        parts = [f"{name.replace('_', ' ')} {n}" for name, n in counts.items() if n]
        return ", ".join(parts + (["queue down"] if self.queue_down else []))


def sweep(now: datetime, queue: JobQueue = BROKER) -> SweepReport:
    """One pass of the sweeper at time `now` (see the module's docstring)."""
    report = SweepReport()
    _end_silent_explanations(now, report)
    _end_silent_replies(now, report)
    _send_waiting(now, queue, report)
    if not report.queue_down:  # a run's rows would only wait unsent while the queue is down
        report.runs_fed = feed_waiting_runs()
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


def _send_waiting(now: datetime, queue: JobQueue, report: SweepReport) -> None:
    queued = Explanation.objects.filter(status=Explanation.Status.QUEUED)
    waiting_replies = Message.objects.untaken()
    rows = list(queued.filter(sent_at__isnull=True))
    replies = list(waiting_replies.filter(sent_at__isnull=True))
    resend_before = now - timedelta(seconds=settings.SWEEP_RESEND_AFTER_S)
    lost_rows = queued.filter(sent_at__lt=resend_before)
    lost_replies = waiting_replies.filter(sent_at__lt=resend_before)
    if lost_rows.exists() or lost_replies.exists():
        depth = queue.depth()
        if depth is None:
            report.queue_down = True
            return
        if depth == 0:  # nothing waits in the queue, so their messages are not there: lost
            rows += list(lost_rows)
            replies += list(lost_replies)
    try:
        for reply in replies:
            send(queue, Job(TASK_REPLY, [str(reply.pk)]), now)
            report.replies_sent.append(str(reply.pk))
        for job in explanation_jobs(rows):
            send(queue, job, now)
            report.sent.extend(job.args[0])
    except QueueUnavailable:
        report.queue_down = True
