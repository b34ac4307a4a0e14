"""The worker's one seam into Django: read job inputs, store results, publish frames.

Everything else under workers/ is Django-free; `workers/jobs.py` drives the engine through this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import close_old_connections, transaction
from django.utils import timezone
from pydantic import BaseModel

from workers.contracts import conversation_group


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
    history: list[Turn]  # root → the user message being answered


@dataclass(frozen=True)
class ExplainJob:
    conversation_id: str
    source_id: str
    settings: dict[str, Any]
    token_ids: list[int]
    explanation_ids: list[str]
    positions: list[int]
    template_end: int = 0  # positions before this are the template's preamble (no message's)


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
            str(message.conversation_id), message_id, message.conversation.source_id, history
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

    def finish_reply(self, message_id: str, content: str) -> None:
        from nlaweb.chat.models import Message

        Message.objects.filter(pk=message_id).update(content=content, status=Message.Status.DONE)

    def fail_reply(self, message_id: str, content: str, error: str) -> None:
        from nlaweb.chat.models import Message

        Message.objects.filter(pk=message_id).update(
            content=content, status=Message.Status.FAILED, error=error
        )

    # -- explanations -------------------------------------------------------------------------
    def explain_job(self, explanation_ids: list[str]) -> ExplainJob | None:
        """The still-pending rows of one snapshot/source/settings, marked running."""
        from nlaweb.explanations.models import Explanation

        with transaction.atomic():
            rows = list(
                Explanation.objects.select_for_update()
                .select_related("snapshot")
                # RUNNING too: a job redelivered after its worker was killed takes its rows back.
                .filter(
                    pk__in=explanation_ids,
                    status__in=[Explanation.Status.QUEUED, Explanation.Status.RUNNING],
                )
                .order_by("position")
            )
            if not rows:
                return None
            first = rows[0]
            rows = [
                r
                for r in rows
                if (r.snapshot_id, r.source_id, r.settings_key)
                == (first.snapshot_id, first.source_id, first.settings_key)
            ]
            Explanation.objects.filter(pk__in=[r.pk for r in rows]).update(
                status=Explanation.Status.RUNNING, stage="loading", started_at=timezone.now()
            )
        return ExplainJob(
            conversation_id=str(first.snapshot.conversation_id),
            source_id=first.source_id,
            settings=first.settings,
            token_ids=list(first.snapshot.token_ids),
            explanation_ids=[str(r.pk) for r in rows],
            positions=[r.position for r in rows],
            template_end=_template_end(first.snapshot.spans),
        )

    def set_stage(self, explanation_ids: list[str], stage: str) -> None:
        from nlaweb.explanations.models import Explanation

        Explanation.objects.filter(pk__in=explanation_ids).update(stage=stage)

    def finish_explanation(self, explanation_id: str, fields: dict[str, Any]) -> None:
        from nlaweb.explanations.models import Explanation

        Explanation.objects.filter(pk=explanation_id).update(
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

    # -- frames -------------------------------------------------------------------------------
    def publish(self, conversation_id: str, frame: BaseModel) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        async_to_sync(layer.group_send)(conversation_group(conversation_id), frame.model_dump())
