"""The worker's one seam into Django: read job inputs, store results, publish frames.

Everything else under workers/ is Django-free; `workers/jobs.py` drives the engine through this.

Taking rows is a claim: each taken row records the job (Celery task id), an attempt and a heartbeat
that a thread renews while the job runs (`DjangoStore.heartbeat`), so the sweeper can tell a dead
job's rows from a slow one's. Writes of results survive a database restart: they are retried for
STORE_RETRY_FOR_S on a fresh connection. Frames are best effort (nlaweb/frames.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from pydantic import BaseModel

from nlaweb.frames import publish
from workers.contracts import ChatFailed, ExplanationFailed, ExplanationQueued, RunProgress
from workers.nla.types import MAX_POSITIONS_PER_REQUEST

if TYPE_CHECKING:
    from nlaweb.sweep import JobQueue

log = logging.getLogger(__name__)
T = TypeVar("T")


def storable(text: str) -> str:
    """`text` as PostgreSQL can store it (text and jsonb refuse NUL, which a byte-level tokenizer
    decodes byte 0 to): each NUL becomes U+FFFD. Found by benchmarks/load.py on the tiny model."""
    return text.replace("\x00", "\ufffd")


#: What a database that went away raises (a restart, a network cut, a broken connection).
_DATABASE_GONE = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Turn:
    message_id: str
    role: str
    content: str


@dataclass(frozen=True)
class ReplyJob:
    conversation_id: str
    message_id: str
    source_id: str
    history: list[Turn]  # root → the message being answered
    #: How the message gets its text: "written"/"regenerated" (generated), "edited" (its `content`
    #: as the person wrote it, only tokenized), "continued" (generated after `content`).
    origin: str = "written"
    content: str = ""
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class JobRow:
    explanation_id: str
    conversation_id: str
    position: int
    template_end: int = 0  # positions before this are the template's preamble (no message's)


@dataclass(frozen=True)
class JobGroup:
    """The rows of one snapshot: one capture pass over its tokens."""

    token_ids: list[int]
    rows: list[JobRow]


@dataclass(frozen=True)
class ExplainJob:
    """Rows of one source and settings, from one or more snapshots, explained as one engine batch."""

    source_id: str
    settings: dict[str, Any]
    groups: list[JobGroup]

    @property
    def rows(self) -> list[JobRow]:
        return [row for group in self.groups for row in group.rows]

    @property
    def explanation_ids(self) -> list[str]:
        return [row.explanation_id for row in self.rows]


def _groups(rows: list[Any]) -> list[JobGroup]:
    """Rows grouped by snapshot (first-seen order), positions ascending within each."""
    by_snapshot: dict[Any, list[Any]] = {}
    for row in rows:
        by_snapshot.setdefault(row.snapshot_id, []).append(row)
    groups = []
    for members in by_snapshot.values():
        snapshot = members[0].snapshot
        end = _template_end(snapshot.spans)
        job_rows = [
            JobRow(str(r.pk), str(snapshot.conversation_id), r.position, end)
            for r in sorted(members, key=lambda r: r.position)
        ]
        groups.append(JobGroup(list(snapshot.token_ids), job_rows))
    return groups


def _template_end(spans: list[dict[str, Any]]) -> int:
    """End of the leading span that belongs to no message (BOS, a default system prompt), else 0."""
    first = spans[0] if spans else None
    return int(first["end"]) if first and first["start"] == 0 and not first["message_id"] else 0


@dataclass
class _Claim:
    """What taking a job's rows decided: rows to run, rows failed for good, rows handed back."""

    rows: list[Any] = field(default_factory=list)
    given_up: list[Any] = field(default_factory=list)
    released: list[Any] = field(default_factory=list)


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
        from nlaweb.chat.models import Message
        from nlaweb.explanations.models import Explanation

        now = timezone.now()
        try:
            Explanation.objects.filter(
                status=Explanation.Status.RUNNING, job_id=self.job_id
            ).update(heartbeat_at=now)
            Message.objects.filter(status=Message.Status.GENERATING, job_id=self.job_id).update(
                heartbeat_at=now
            )
        except DatabaseError as error:  # the next beat tries again on a new connection
            log.warning("heartbeat of job %s not stored: %r", self.job_id, error)
            _drop_connection()

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

    def _claim_reply(self, message_id: str) -> Any:
        from nlaweb.chat.models import Message
        from nlaweb.explanations.models import silent_before
        from nlaweb.sweep import reply_gave_up

        now = timezone.now()
        with transaction.atomic():
            message = (
                Message.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("conversation")
                .filter(pk=message_id, status=Message.Status.GENERATING)
                .filter(
                    Q(job_id="")
                    | Q(job_id=self.job_id)  # redelivered: its earlier run died
                    | Q(heartbeat_at__lt=silent_before(now))
                )
                .first()
            )
            if message is None:
                return None
            if message.attempts >= settings.JOB_MAX_ATTEMPTS:
                message.status, message.error = (
                    Message.Status.FAILED,
                    reply_gave_up(message.attempts),
                )
                message.job_id = ""
                message.save(update_fields=["status", "error", "job_id"])
                return message
            Message.objects.filter(pk=message.pk).update(
                attempts=F("attempts") + 1, heartbeat_at=now, job_id=self.job_id
            )
        return message

    def save_snapshot(
        self,
        leaf_id: str,
        source_id: str,
        token_ids: list[int],
        token_texts: list[str],
        spans: list[dict[str, Any]],
    ) -> None:
        from nlaweb.chat.models import Message, Snapshot, hash_tokens

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
        from nlaweb.chat.models import Message

        self._retrying(
            "store the reply",
            lambda: Message.objects.filter(pk=message_id).update(
                content=storable(content),
                status=Message.Status.DONE,
                error="",
                truncated=truncated,
            ),
        )

    def fail_reply(self, message_id: str, content: str, error: str) -> None:
        from nlaweb.chat.models import Message

        self._retrying(
            "store the reply's failure",
            lambda: Message.objects.filter(pk=message_id).update(
                content=storable(content), status=Message.Status.FAILED, error=error
            ),
        )

    # -- explanations -------------------------------------------------------------------------
    def explain_job(self, explanation_ids: list[str]) -> ExplainJob | None:
        """Take up to one batch of queued rows of the job's source and settings, round-robin over
        their owners (one person's flood cannot fill every batch), all marked running.

        A row a worker already died on runs alone (its batch-mates are handed back and sent as their
        own jobs), and one that JOB_MAX_ATTEMPTS workers died on fails with a sentence, so a row
        that kills its worker never loops nor takes other rows down with it. A redelivered job (same
        job id) takes its own rows back. None when nothing is left to do."""
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
        return ExplainJob(first.source_id, first.settings, _groups(claim.rows))

    def _claim(self, explanation_ids: list[str]) -> _Claim:
        from nlaweb.explanations.models import Explanation, silent
        from nlaweb.sweep import explanation_gave_up, fail_explanation, requeue_explanations

        now = timezone.now()
        group = (
            Explanation.objects.filter(pk__in=explanation_ids)
            .order_by("position")
            .values("source_id", "settings_key")
            .first()
        )
        if group is None:
            return _Claim()
        with transaction.atomic():
            own = list(
                _locked(Explanation.objects.filter(pk__in=explanation_ids, **group))
                .filter(
                    Q(status=Explanation.Status.QUEUED)
                    | Q(status=Explanation.Status.RUNNING, job_id=self.job_id)
                    | (Q(status=Explanation.Status.RUNNING) & silent(now))
                )
                .order_by("position")
            )
            claim = _Claim()
            for row in own:
                if row.attempts >= settings.JOB_MAX_ATTEMPTS:
                    fail_explanation(row, explanation_gave_up(row.attempts), now)
                    claim.given_up.append(row)
            retried = [
                r
                for r in own
                if r not in claim.given_up
                and (r.attempts > 0 or r.status == Explanation.Status.RUNNING)
            ]
            if retried:
                claim.rows = retried[:1]
                claim.released = [r for r in own if r not in claim.given_up + claim.rows]
                requeue_explanations(claim.released)
            else:
                claim.rows = _round_robin(Explanation, group, MAX_POSITIONS_PER_REQUEST)
            Explanation.objects.filter(pk__in=[r.pk for r in claim.rows]).update(
                status=Explanation.Status.RUNNING,
                stage="loading",
                started_at=now,
                heartbeat_at=now,
                attempts=F("attempts") + 1,
                job_id=self.job_id,
            )
        return claim

    def _send_released(self, rows: list[Any]) -> None:
        """Send rows handed back by a retried job, one job each; if the broker is down they stay
        unsent and the sweeper sends them later."""
        from nlaweb import jobs
        from nlaweb.sweep import explanation_jobs, send

        try:
            for job in explanation_jobs(rows):
                send(self.queue or jobs.BROKER, job, timezone.now())
        except jobs.QueueUnavailable:
            log.warning("rows handed back unsent; the sweeper will send them")

    def set_stage(self, explanation_ids: list[str], stage: str) -> None:
        """Best effort: a stage is progress, not a result."""
        from nlaweb.explanations.models import Explanation

        try:
            Explanation.objects.filter(pk__in=explanation_ids).update(stage=stage)
        except DatabaseError as error:
            log.warning("stage %s of %s not stored: %r", stage, explanation_ids, error)
            _drop_connection()

    def finish_explanation(self, explanation_id: str, fields: dict[str, Any]) -> None:
        from nlaweb.explanations.models import Explanation

        fields = {k: storable(v) if isinstance(v, str) else v for k, v in fields.items()}
        # Only a row still running: a row cancelled meanwhile keeps "cancelled" (result discarded).
        self._retrying(
            "store the explanation",
            lambda: Explanation.objects.filter(
                pk=explanation_id, status=Explanation.Status.RUNNING
            ).update(
                **fields, status=Explanation.Status.DONE, stage="done", finished_at=timezone.now()
            ),
        )

    def fail_explanations(self, explanation_ids: list[str], error: str) -> None:
        """Fail the rows not already done (a late error never undoes a stored result)."""
        from nlaweb.explanations.models import Explanation

        self._retrying(
            "store the failure",
            lambda: (
                Explanation.objects.filter(pk__in=explanation_ids)
                .exclude(status=Explanation.Status.DONE)
                .update(
                    status=Explanation.Status.FAILED,
                    stage="failed",
                    error=error,
                    finished_at=timezone.now(),
                )
            ),
        )

    # -- what waits on a job ----------------------------------------------------------------
    def queue_moved(self, source_id: str) -> None:
        """Tell every row still waiting for this source its place in line (it just moved up)."""
        from nlaweb.explanations.models import Explanation
        from nlaweb.explanations.runs import queue_places

        places = queue_places(source_id)
        owners = dict(
            Explanation.objects.filter(pk__in=list(places)).values_list(
                "pk", "snapshot__conversation_id"
            )
        )
        for pk, conversation_id in owners.items():
            frame = ExplanationQueued(explanation_id=str(pk), place=places[str(pk)])
            self.publish(str(conversation_id), frame)

    def job_finished(self, explanation_ids: list[str]) -> None:
        """Feed the whole-message runs of the people whose rows finished, and tell the pages of
        the runs those rows belong to how far they got."""
        from nlaweb.chat.models import prefix_hashes
        from nlaweb.explanations.models import ExplainRun, Explanation
        from nlaweb.explanations.runs import feed_waiting_runs, progress

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


def _locked(rows: Any) -> Any:
    """Rows locked for this transaction; rows another transaction holds are skipped, not awaited."""
    return rows.select_for_update(skip_locked=True, of=("self",)).select_related("snapshot")


def _round_robin(model: Any, group: Mapping[str, object], limit: int) -> list[Any]:
    """Up to `limit` queued rows of `group` nobody's worker died on, taken in turns over their
    owners (each person's oldest first; people in the order of their oldest row), locked. Rows
    that other workers hold are skipped and the next turns looked at, so a job takes a full batch
    whenever one waits (as many jobs as requests then explain every row)."""
    order: list[Any] = []
    taken: dict[Any, Any] = {}
    while len(taken) < limit:
        turns = _turns(model, group, limit, exclude=order)
        if not turns:
            break
        order += turns
        start = 0
        while len(taken) < limit and start < len(turns):
            chunk = turns[start : start + limit - len(taken)]
            start += len(chunk)
            locked = _locked(model.objects.filter(pk__in=chunk, status=model.Status.QUEUED))
            taken.update({row.pk: row for row in locked})
    return [taken[pk] for pk in order if pk in taken]


def _turns(model: Any, group: Mapping[str, object], limit: int, exclude: list[Any]) -> list[Any]:
    """Ids of up to `limit` waiting rows per owner, not in `exclude`, in round-robin order."""
    owner = F("snapshot__conversation__owner_id")
    candidates = list(
        model.objects.filter(status=model.Status.QUEUED, attempts=0, **group)
        .exclude(pk__in=exclude)
        .annotate(
            owner=owner,
            turn=Window(RowNumber(), partition_by=[owner], order_by=[F("created_at"), "position"]),
        )
        .filter(turn__lte=limit)
        .values_list("pk", "owner", "turn", "created_at")
    )
    first_seen = {who: created for _, who, turn, created in candidates if turn == 1}
    ranked = sorted(candidates, key=lambda c: (c[2], first_seen[c[1]], c[1]))
    return [pk for pk, *_ in ranked]


def _drop_connection() -> None:
    """Forget this thread's broken connection; the next query opens a new one."""
    with contextlib.suppress(DatabaseError):
        connection.close()
