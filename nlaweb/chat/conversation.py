"""Chat domain: start a conversation, send a message, pick what the page shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from nlaweb.chat.models import Conversation, Message, Snapshot
from nlaweb.jobs import enqueue
from nlaweb.sources import default_source
from workers.contracts import TASK_REPLY


def start_conversation(owner: User) -> Conversation:
    return Conversation.objects.create(owner=owner, source_id=default_source().id)


class ReplyInProgress(Exception):
    """The previous reply is still being generated."""


@transaction.atomic
def send_message(conversation: Conversation, content: str) -> Message:
    """Append a user message and an assistant placeholder, and enqueue the reply. Returns the placeholder."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    head = conversation.head
    if head is not None and head.status == Message.Status.GENERATING:
        raise ReplyInProgress(
            "Wait for the current reply to finish before sending another message."
        )
    user = Message.objects.create(
        conversation=conversation, parent=head, role=Message.Role.USER, content=content
    )
    reply = Message.objects.create(
        conversation=conversation,
        parent=user,
        role=Message.Role.ASSISTANT,
        status=Message.Status.GENERATING,
    )
    conversation.head = reply
    if not conversation.title:
        conversation.title = content[:80]
    conversation.save(update_fields=["head", "title", "updated_at"])
    enqueue(TASK_REPLY, str(reply.id))
    return reply


@dataclass(frozen=True)
class RenderedMessage:
    message: Message
    chips: list[dict[str, Any]] | None  # None: not tokenized yet (show the plain text)


@dataclass(frozen=True)
class ThreadView:
    conversation: Conversation
    snapshot: Snapshot | None
    messages: list[RenderedMessage]
    lead_chips: list[dict[str, Any]]  # template tokens before the first message (e.g. BOS)
    tail_chips: list[dict[str, Any]]  # template tokens after the last message

    @property
    def generating(self) -> Message | None:
        last = self.messages[-1].message if self.messages else None
        return last if last and last.status == Message.Status.GENERATING else None


def thread_view(conversation: Conversation) -> ThreadView:
    """The head path with token chips from the deepest snapshot on it."""
    path = conversation.path()
    snapshot = _deepest_snapshot(path)
    spans = snapshot.spans_by_message() if snapshot else {}
    rendered = []
    for message in path:
        span = spans.get(str(message.id))
        chips = snapshot.chips(span["start"], span["end"]) if snapshot and span else None
        rendered.append(RenderedMessage(message, chips))
    lead: list[dict[str, Any]] = []
    tail: list[dict[str, Any]] = []
    if snapshot:
        starts = [s["start"] for s in snapshot.spans if s["message_id"]] or [0]
        ends = [s["end"] for s in snapshot.spans if s["message_id"]] or [0]
        lead = snapshot.chips(0, min(starts))
        tail = snapshot.chips(max(ends), len(snapshot.token_ids))
    return ThreadView(conversation, snapshot, rendered, lead, tail)


def _deepest_snapshot(path: list[Message]) -> Snapshot | None:
    ids = [m.id for m in path]
    snapshots = {s.leaf_id: s for s in Snapshot.objects.filter(leaf_id__in=ids)}
    for message in reversed(path):
        if message.id in snapshots:
            return snapshots[message.id]
    return None
