"""Send worker jobs to the broker by task name, after the transaction that saved their rows commits.

The rows are the truth, the message a hint: a job that reached the broker marks its rows `sent_at`;
one that did not (the broker is down) leaves them queued and unsent, the request answers 503 with a
sentence (QueueUnavailable), and the sweeper (nlaweb/jobs/sweep.py) sends them when the broker is
back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from celery import Celery
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import ChannelError, KombuError

from nlaweb.api.models import ApiJob
from nlaweb.celery import app
from nlaweb.chat.models import Message
from nlaweb.explanations.models import Explanation
from workers.contracts import GPU_QUEUE, TASK_EXPLAIN, TASK_REPLY, TASK_TOKENIZE, TASK_VECTORS
from workers.nla.types import MAX_POSITIONS_PER_REQUEST

log = logging.getLogger(__name__)

#: One quick retry: a broker that refuses twice in a row is down, and the person should hear so now.
_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.2}
#: What a broker that is down raises (kombu wraps most; a socket may still raise its own).
_BROKER_DOWN = (KombuError, OSError)

UNSENT = {
    TASK_REPLY: "The job queue is not reachable right now, so the reply has not started; your "
    "message is saved and its reply will be written as soon as the queue is back.",
    TASK_EXPLAIN: "The job queue is not reachable right now; the explanation is saved and will "
    "start as soon as the queue is back.",
}


class QueueUnavailable(Exception):
    """The broker did not take a job. Its rows are saved and unsent; the message is for people."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Job:
    """One task to send: a value, so tests can read what a commit would send."""

    task_name: str
    args: list[str | list[str]]

    def __call__(self) -> None:
        """Send it and mark its rows sent; QueueUnavailable when the broker is down."""
        send(BROKER, self, timezone.now())


class Broker:
    """The gpu queue of a Celery app's broker: send a job, count waiting jobs."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send(self, job: Job) -> None:
        try:
            self.celery.send_task(
                job.task_name,
                args=job.args,
                queue=GPU_QUEUE,
                retry=True,
                retry_policy=_RETRY_POLICY,
            )
        except _BROKER_DOWN as error:
            log.warning("job %s not sent, the broker is down: %r", job.task_name, error)
            raise QueueUnavailable(UNSENT.get(job.task_name, UNSENT[TASK_EXPLAIN])) from error

    def depth(self) -> int | None:
        """Jobs waiting in the gpu queue (not those a worker holds); None when the broker is down."""
        try:
            with self.celery.connection_for_read() as connection:
                connection.ensure_connection(
                    max_retries=1, interval_start=0.2, interval_step=0.2, interval_max=0.2
                )
                try:
                    declared = connection.default_channel.queue_declare(
                        queue=GPU_QUEUE, passive=True
                    )
                except ChannelError:  # nobody has declared the queue yet: nothing waits
                    return 0
                return int(declared.message_count)
        except _BROKER_DOWN as error:
            log.warning("the broker is down: %r", error)
            return None


BROKER = Broker(app)


def enqueue(task_name: str, *args: str | list[str]) -> None:
    """Send the job once the current transaction commits (its rows exist first). If the broker is
    down, QueueUnavailable propagates from the commit to the caller: the rows are saved, unsent."""
    transaction.on_commit(Job(task_name, list(args)))


class JobQueue(Protocol):
    """Where jobs go: a Broker in production, an in-memory one in tests."""

    def send(self, job: Job) -> None: ...
    def depth(self) -> int | None: ...


def send(queue: JobQueue, job: Job, now: datetime) -> None:
    """Send `job` and mark its rows sent; QueueUnavailable when the broker is down."""
    queue.send(job)
    mark_sent(job, now)


def mark_sent(job: Job, now: datetime) -> None:
    """Record that the broker took `job`: its rows that still wait are not the sweeper's to send."""
    if job.task_name == TASK_EXPLAIN:
        Explanation.objects.filter(pk__in=job.args[0]).mark_sent(now)
    elif job.task_name == TASK_REPLY:
        Message.objects.filter(pk=str(job.args[0])).mark_sent(now)
    elif job.task_name in (TASK_TOKENIZE, TASK_VECTORS):
        ApiJob.objects.filter(pk=str(job.args[0])).mark_sent(now)


def api_job(job: ApiJob) -> Job:
    """The message of an API job: its task by kind, its row's id."""
    task = TASK_TOKENIZE if job.kind == ApiJob.Kind.TOKENIZE else TASK_VECTORS
    return Job(task, [str(job.pk)])


def explanation_jobs(rows: list[Explanation]) -> list[Job]:
    """Jobs for queued rows: a row a worker already died on alone (so a row that kills its worker
    cannot take others down with it), the others by source and settings, up to a batch each."""
    jobs = [Job(TASK_EXPLAIN, [[str(row.pk)]]) for row in rows if row.attempts > 0]
    fresh: dict[tuple[str, str], list[str]] = {}
    for row in sorted((r for r in rows if r.attempts == 0), key=lambda r: r.created_at):
        fresh.setdefault((row.source_id, row.settings_key), []).append(str(row.pk))
    for ids in fresh.values():
        for start in range(0, len(ids), MAX_POSITIONS_PER_REQUEST):
            jobs.append(Job(TASK_EXPLAIN, [ids[start : start + MAX_POSITIONS_PER_REQUEST]]))
    return jobs
