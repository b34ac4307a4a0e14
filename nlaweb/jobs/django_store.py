"""The store the worker is handed (workers/store.py's Store protocol) over the ORM and the channel
layer: read job inputs, store results, publish frames.

Taking rows is a claim: each taken row records the job (Celery task id), an attempt and a heartbeat
that a thread renews while the job runs (`DjangoStore.heartbeat`), so the sweeper can tell a dead
job's rows from a slow one's. The rules of each state change are the models' QuerySet methods
(`Explanation.objects.claim`, `Message.objects.claim`, …); this class wraps them for the worker.
Writes of results survive a database restart: they are retried for STORE_RETRY_FOR_S on a fresh
connection. Frames are best effort (nlaweb/jobs/frames.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.utils import timezone
from pydantic import BaseModel

from nlaweb.chat.models import Message, Snapshot, hash_tokens, prefix_hashes
from nlaweb.explanations.models import Claim, ExplainRun, Explanation
from nlaweb.explanations.runs import feed_waiting_runs, progress
from nlaweb.jobs.broker import BROKER, JobQueue, QueueUnavailable, explanation_jobs, send
from nlaweb.jobs.frames import publish
from workers.contracts import (
    ChatFailed,
    ExplanationFailed,
    ExplanationQueued,
    RunProgress,
    in_line,
)
from workers.nla.types import MAX_POSITIONS_PER_REQUEST
from workers.store import ExplainJob, ReplyJob, TakenRow, Turn, group_rows

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What a database that went away raises (a restart, a network cut, a broken connection).
_DATABASE_GONE = (OperationalError, InterfaceError)


def storable(text: str) -> str:
    """`text` as PostgreSQL can store it (text and jsonb refuse NUL, which a byte-level tokenizer
    decodes byte 0 to): each NUL becomes U+FFFD. Found by benchmarks/load.py on the tiny model."""
    return text.replace("\x00", "\ufffd")


def taken_rows(rows: list[Explanation]) -> list[TakenRow]:
    return [
        TakenRow(
            str(r.pk),
            str(r.snapshot_id),
            str(r.snapshot.conversation_id),
            list(r.snapshot.token_ids),
            list(r.snapshot.spans),
            r.position,
        )
        for r in rows
    ]


class DjangoStore:
    """Reads and writes rows with the ORM; publishes frames on the channel layer.

    `job_id` is the Celery task id of the job (a redelivered job has the same one); without one, the
    store makes one up (a job run in-process)."""

    def __init__(self, job_id: str | None = None, queue: JobQueue | None = None) -> None:
        close_old_connections()
        self.job_id = job_id or f"local-{uuid.uuid4()}"
        self.queue = queue  # where rows handed back are sent; None: the broker of the settings

    # -- liveness -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """While the block runs, a thread marks this job's running rows and generating reply alive
        every HEARTBEAT_INTERVAL_S. A killed process stops beating; the sweeper notices."""
        stop = threading.Event()
        beat = threading.Thread(
            target=self._beat_until, args=(stop,), name="job-heartbeat", daemon=True
        )
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()

    def _beat_until(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(settings.HEARTBEAT_INTERVAL_S):
                self._beat()
        finally:
            connection.close()  # this thread's own connection

    def _beat(self) -> None:
        try:
            self._beat_rows(timezone.now())
        except DatabaseError as error:  # the next beat tries again on a new connection
            log.warning("heartbeat of job %s not stored: %r", self.job_id, error)
            _drop_connection()

    def _beat_rows(self, now: datetime) -> None:
        """Mark this job's running rows and generating reply alive at `now`."""
        Explanation.objects.beat(self.job_id, now)
        Message.objects.beat(self.job_id, now)

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        """`operation()`, tried again on a fresh connection while the database is unreachable, for
        up to STORE_RETRY_FOR_S: a finished result outlives a database restart."""
        deadline = time.monotonic() + settings.STORE_RETRY_FOR_S
        pause, tries = 0.25, 1
        while True:
            try:
                done = operation()
            except _DATABASE_GONE as error:
                if time.monotonic() >= deadline:
                    raise
                log.warning("could not %s (%r); trying again in %.2f s", what, error, pause)
                _drop_connection()
                threading.Event().wait(pause)
                pause, tries = min(pause * 2, 2.0), tries + 1
                continue
            if tries > 1:
                log.info("could %s at try %d: the database is back", what, tries)
            return done

    def _best_effort(self, what: str, operation: Callable[[], T], otherwise: T) -> T:
        """`operation()`, or `otherwise` while the database does not answer: places in line, what
        waits on finished rows and the rows a running job could take are hints (the next job and
        the sweeper cover them), never worth holding a job's results for."""
        try:
            return operation()
        except DatabaseError as error:
            log.warning("could not %s (%r); going on without", what, error)
            _drop_connection()
            return otherwise

    # -- chat ---------------------------------------------------------------------------------
    def reply_job(self, message_id: str) -> ReplyJob | None:
        """Take the placeholder (unless another live job has it) and read its history; None when
        there is nothing to do, or when workers died on it JOB_MAX_ATTEMPTS times (then it fails)."""
        message = self._retrying("take the reply", lambda: self._claim_reply(message_id))
        if message is None:
            return None
        if message.status == message.Status.FAILED:
            publish(
                str(message.conversation_id),
                ChatFailed(message_id=message_id, error=message.error),
            )
            return None
        path = message.path()[:-1]
        # A failed reply earlier on the path stays in (with what it wrote): chat templates such as
        # Gemma's refuse two user turns in a row.
        history = [Turn(str(m.id), m.role, m.content) for m in path]
        return ReplyJob(
            str(message.conversation_id),
            message_id,
            message.conversation.source_id,
            history,
            origin=message.origin,
            content=message.content,
            temperature=message.temperature,
            seed=message.seed,
        )

    def _claim_reply(self, message_id: str) -> Message | None:
        with transaction.atomic():
            return Message.objects.claim(message_id, self.job_id, timezone.now())

    def save_snapshot(
        self,
        leaf_id: str,
        source_id: str,
        token_ids: list[int],
        token_texts: list[str],
        spans: list[dict[str, Any]],
    ) -> None:
        def save() -> None:
            leaf = Message.objects.get(pk=leaf_id)
            Snapshot.objects.update_or_create(
                leaf=leaf,
                defaults=dict(
                    conversation_id=leaf.conversation_id,
                    source_id=source_id,
                    token_ids=token_ids,
                    token_texts=[storable(t) for t in token_texts],
                    spans=spans,
                    tokens_hash=hash_tokens(token_ids),
                ),
            )

        self._retrying("store the snapshot", save)

    def finish_reply(self, message_id: str, content: str, truncated: bool = False) -> None:
        one = Message.objects.filter(pk=message_id).held_by(self.job_id)
        self._retrying("store the reply", lambda: one.finish(storable(content), truncated))

    def fail_reply(self, message_id: str, content: str, error: str) -> None:
        one = Message.objects.filter(pk=message_id).held_by(self.job_id)
        self._retrying("store the reply's failure", lambda: one.fail(storable(content), error))

    # -- explanations -------------------------------------------------------------------------
    def explain_job(self, explanation_ids: list[str]) -> ExplainJob | None:
        """Take up to one batch of queued rows of the job's source and settings, in turns over
        their owners (one person's flood cannot fill every batch), all marked running
        (`ExplanationQuerySet.claim` says which). Rows failed for good hear so; rows handed back
        are sent as their own jobs. None when nothing is left to do."""
        claim = self._retrying("take the job's rows", lambda: self._claim(explanation_ids))
        for row in claim.given_up:
            publish(
                str(row.snapshot.conversation_id),
                ExplanationFailed(explanation_id=str(row.pk), error=row.error),
            )
        if claim.released:
            self._send_released(claim.released)
        if not claim.rows:
            return None
        first = claim.rows[0]
        return ExplainJob(first.source_id, first.settings, group_rows(taken_rows(claim.rows)))

    def _claim(self, explanation_ids: list[str]) -> Claim:
        with transaction.atomic():
            return Explanation.objects.claim(
                explanation_ids, self.job_id, MAX_POSITIONS_PER_REQUEST, timezone.now()
            )

    def take_waiting(self, job: ExplainJob, limit: int) -> ExplainJob | None:
        """Take up to `limit` more queued rows of `job`'s source and settings, anyone's, in the
        fairness order, as this job's: running, beating with it and fenced by its id, so their
        own jobs find them taken and the sweeper queues them again if this worker dies. None when
        none waits, or when the database does not answer (their own jobs take them later)."""
        none: list[Explanation] = []
        rows = self._best_effort("take waiting rows", lambda: self._take_waiting(job, limit), none)
        if not rows:
            return None
        return ExplainJob(job.source_id, job.settings, group_rows(taken_rows(rows)))

    def _take_waiting(self, job: ExplainJob, limit: int) -> list[Explanation]:
        with transaction.atomic():
            return Explanation.objects.take_waiting(
                job.explanation_ids[0], self.job_id, limit, timezone.now()
            )

    def _send_released(self, rows: list[Explanation]) -> None:
        """Send rows handed back by a retried job, one job each; if the broker is down they stay
        unsent and the sweeper sends them later."""
        try:
            for job in explanation_jobs(rows):
                send(self.queue or BROKER, job, timezone.now())
        except QueueUnavailable:
            log.warning("rows handed back unsent; the sweeper will send them")

    def set_stage(self, explanation_ids: list[str], stage: str) -> None:
        """Best effort: a stage is progress, not a result."""
        try:
            Explanation.objects.filter(pk__in=explanation_ids).set_stage(stage)
        except DatabaseError as error:
            log.warning("stage %s of %s not stored: %r", stage, explanation_ids, error)
            _drop_connection()

    def finish_explanation(self, explanation_id: str, fields: dict[str, Any]) -> None:
        fields = {k: storable(v) if isinstance(v, str) else v for k, v in fields.items()}
        one = Explanation.objects.filter(pk=explanation_id).held_by(self.job_id)
        self._retrying("store the explanation", lambda: one.finish(fields, timezone.now()))

    def fail_explanations(self, explanation_ids: list[str], error: str) -> None:
        rows = Explanation.objects.filter(pk__in=explanation_ids, job_id=self.job_id)  # its own
        self._retrying("store the failure", lambda: rows.fail(error, timezone.now()))

    # -- what waits on a job ----------------------------------------------------------------
    def queue_moved(self, source_id: str) -> None:
        """Tell every row still waiting for this source its place in line (it just moved up)."""
        self._best_effort("tell the queue its places", lambda: self._queue_moved(source_id), None)

    def _queue_moved(self, source_id: str) -> None:
        places = Explanation.objects.queue_places(source_id)
        owners = dict(
            Explanation.objects.filter(pk__in=list(places)).values_list(
                "pk", "snapshot__conversation_id"
            )
        )
        for pk, conversation_id in owners.items():
            place = places[str(pk)]
            frame = ExplanationQueued(explanation_id=str(pk), place=place, line=in_line(place))
            self.publish(str(conversation_id), frame)

    def job_finished(self, explanation_ids: list[str]) -> None:
        """Feed the whole-message runs of the people whose rows finished, and tell the pages of
        the runs those rows belong to how far they got."""
        what = "feed what waited on the rows"
        self._best_effort(what, lambda: self._job_finished(explanation_ids), None)

    def _job_finished(self, explanation_ids: list[str]) -> None:
        rows = list(
            Explanation.objects.filter(pk__in=explanation_ids).values_list(
                "prefix_hash", "snapshot__conversation_id", "snapshot__conversation__owner_id"
            )
        )
        feed_waiting_runs({owner for _, _, owner in rows})
        finished = {prefix for prefix, _, _ in rows}
        runs = ExplainRun.objects.filter(
            snapshot__conversation_id__in={c for _, c, _ in rows}
        ).select_related("snapshot")
        for run in runs:
            hashes = prefix_hashes(run.snapshot.token_ids)
            if finished.isdisjoint(hashes[p] for p in run.positions):
                continue
            now = progress(run)
            frame = RunProgress(
                run_id=str(run.pk), message_id=str(run.message_id), done=now.done, total=now.total
            )
            self.publish(str(run.snapshot.conversation_id), frame)

    # -- frames -------------------------------------------------------------------------------
    def publish(self, conversation_id: str, frame: BaseModel) -> None:
        publish(conversation_id, frame)


def _drop_connection() -> None:
    """Forget this thread's broken connection; the next query opens a new one."""
    with contextlib.suppress(DatabaseError):
        connection.close()
