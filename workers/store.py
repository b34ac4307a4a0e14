"""The worker's one seam into Django: read job inputs, store results, publish frames.

Everything else under workers/ is Django-free; `workers/jobs.py` drives the engine through this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone
from pydantic import BaseModel

from workers.contracts import ExplanationQueued, RunProgress, conversation_group
from workers.nla.types import MAX_POSITIONS_PER_REQUEST


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


class DjangoStore:
    """Reads and writes rows with the ORM; publishes frames on the channel layer."""

    def __init__(self) -> None:
        close_old_connections()

    # -- chat ---------------------------------------------------------------------------------
    def reply_job(self, message_id: str) -> ReplyJob | None:
        from nlaweb.chat.models import Message

        message = Message.objects.select_related("conversation").filter(pk=message_id).first()
        if message is None or message.status != Message.Status.GENERATING:
            return None
        path = message.path()[:-1]
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

    def save_snapshot(
        self,
        leaf_id: str,
        source_id: str,
        token_ids: list[int],
        token_texts: list[str],
        spans: list[dict[str, Any]],
    ) -> None:
        from nlaweb.chat.models import Message, Snapshot, hash_tokens

        leaf = Message.objects.get(pk=leaf_id)
        Snapshot.objects.update_or_create(
            leaf=leaf,
            defaults=dict(
                conversation_id=leaf.conversation_id,
                source_id=source_id,
                token_ids=token_ids,
                token_texts=token_texts,
                spans=spans,
                tokens_hash=hash_tokens(token_ids),
            ),
        )

    def finish_reply(self, message_id: str, content: str, truncated: bool = False) -> None:
        from nlaweb.chat.models import Message

        Message.objects.filter(pk=message_id).update(
            content=content, status=Message.Status.DONE, truncated=truncated
        )

    def fail_reply(self, message_id: str, content: str, error: str) -> None:
        from nlaweb.chat.models import Message

        Message.objects.filter(pk=message_id).update(
            content=content, status=Message.Status.FAILED, error=error
        )

    # -- explanations -------------------------------------------------------------------------
    def explain_job(self, explanation_ids: list[str]) -> ExplainJob | None:
        """The job's pending rows plus other users' queued rows of the same source and settings (up
        to one batch), all marked running: many clicks on one source share one AV batch. Rows that
        another job took are skipped, so that job's own task later finds nothing to do."""
        from nlaweb.explanations.models import Explanation

        with transaction.atomic():
            own = list(self._claimable(Explanation, explanation_ids))
            if not own:
                return None
            first = own[0]
            own = [
                r
                for r in own
                if (r.source_id, r.settings_key) == (first.source_id, first.settings_key)
            ]
            mates = list(
                Explanation.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("snapshot")
                .filter(
                    status=Explanation.Status.QUEUED,
                    source_id=first.source_id,
                    settings_key=first.settings_key,
                )
                .exclude(pk__in=[r.pk for r in own])
                .order_by("created_at")[: max(0, MAX_POSITIONS_PER_REQUEST - len(own))]
            )
            rows = own + mates
            Explanation.objects.filter(pk__in=[r.pk for r in rows]).update(
                status=Explanation.Status.RUNNING, stage="loading", started_at=timezone.now()
            )
        return ExplainJob(first.source_id, first.settings, _groups(rows))

    @staticmethod
    def _claimable(model: Any, explanation_ids: list[str]) -> Any:
        """Queued rows, or running ones whose worker died: a job redelivered after its time limit
        takes its rows back."""
        from nlaweb.explanations.models import abandoned_before

        pending = Q(status=model.Status.QUEUED) | Q(
            status=model.Status.RUNNING, started_at__lt=abandoned_before()
        )
        return (
            model.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("snapshot")
            .filter(pending, pk__in=explanation_ids)
            .order_by("position")
        )

    def set_stage(self, explanation_ids: list[str], stage: str) -> None:
        from nlaweb.explanations.models import Explanation

        Explanation.objects.filter(pk__in=explanation_ids).update(stage=stage)

    def finish_explanation(self, explanation_id: str, fields: dict[str, Any]) -> None:
        from nlaweb.explanations.models import Explanation

        # Only a row still running: a row cancelled meanwhile keeps "cancelled" (result discarded).
        Explanation.objects.filter(pk=explanation_id, status=Explanation.Status.RUNNING).update(
            **fields, status=Explanation.Status.DONE, stage="done", finished_at=timezone.now()
        )

    def fail_explanations(self, explanation_ids: list[str], error: str) -> None:
        from nlaweb.explanations.models import Explanation

        Explanation.objects.filter(pk__in=explanation_ids).update(
            status=Explanation.Status.FAILED,
            stage="failed",
            error=error,
            finished_at=timezone.now(),
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
        layer = get_channel_layer()
        if layer is None:
            return
        async_to_sync(layer.group_send)(conversation_group(conversation_id), frame.model_dump())
