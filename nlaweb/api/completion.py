"""POST /api/v1/completion: the target's reply to `messages`, written by the same reply job as the
page's (`workers.reply` via send_message), returned with the templated text and its tokens, ready
for /explain (its `cacheId` opens the conversation on the page)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction

from nlaweb.api.http_errors import TimedOut, Unavailable
from nlaweb.api.resolve import resolve_source
from nlaweb.api.schemas import CompletionRequest
from nlaweb.api.waiting import db_async, wait_for
from nlaweb.chat.conversation import send_message
from nlaweb.chat.models import Conversation, Message, Snapshot
from workers.contracts import conversation_group

FINAL_FRAMES = {"chat.done", "chat.failed"}


@transaction.atomic
def _start(user: Any, source_id: str, request: CompletionRequest) -> Message:
    """The conversation of the messages before the last, then the last sent as on the page."""
    *history, last = request.messages
    conversation = Conversation.objects.create(
        owner=user, source_id=source_id, title=request.messages[0].content[:80]
    )
    parent = None
    for message in history:
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role=message.role, content=message.content
        )
    if parent is not None:
        conversation.head = parent
        conversation.save(update_fields=["head", "updated_at"])
    return send_message(conversation, last.content)


@db_async
def _finished(reply_id: UUID) -> tuple[Message, Snapshot | None] | None:
    """The reply once it failed, or once it is done and its snapshot is stored."""
    reply = Message.objects.get(pk=reply_id)
    if reply.status == Message.Status.FAILED:
        return reply, None
    snapshot = Snapshot.objects.filter(leaf=reply).first()
    return (reply, snapshot) if snapshot is not None else None


async def complete(user: Any, request: CompletionRequest) -> dict[str, Any]:
    source = await db_async(resolve_source)(request.nlaSourceId, request.modelId)
    reply = await db_async(_start)(user, source.id, request)
    found = await wait_for(
        conversation_group(str(reply.conversation_id)),
        lambda: _finished(reply.pk),
        settings.API_WAIT_SECONDS,
        wakes=lambda event: event.get("type") in FINAL_FRAMES,
    )
    if found is None:
        raise TimedOut(
            f"The reply was not written within {settings.API_WAIT_SECONDS} s; it goes on, and "
            f"conversation {reply.conversation_id} (cacheId) shows it once it is."
        )
    message, snapshot = found
    if snapshot is None:
        raise Unavailable(message.error or "The worker could not write the reply.")
    return _answer(message, snapshot)


def _answer(reply: Message, snapshot: Snapshot) -> dict[str, Any]:
    roles = ["template"] * len(snapshot.token_ids)
    for span in snapshot.spans:
        for p in range(span["start"], span["end"]):
            roles[p] = span["role"] if span["message_id"] else "template"
    return {
        "completion": reply.content,
        "text": "".join(snapshot.token_texts),
        "tokens": [
            {"position": p, "token": t, "token_id": i, "role": roles[p]}
            for p, (t, i) in enumerate(zip(snapshot.token_texts, snapshot.token_ids, strict=True))
        ],
        "prompt_length": len(snapshot.token_ids),
        "cacheId": snapshot.conversation_id,
        "nlaSourceId": snapshot.source_id,
    }
