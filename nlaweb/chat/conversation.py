"""Chat domain: start a conversation, send a message. (What the page shows of it is
nlaweb/thread/view.py.)"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from nlaweb.chat.models import Conversation, Message
from nlaweb.jobs.broker import enqueue
from nlaweb.sources.configured import default_source
from workers.contracts import TASK_REPLY


def start_conversation(owner: User) -> Conversation:
    return Conversation.objects.create(owner=owner, source_id=default_source().id)


class ReplyInProgress(Exception):
    """The previous reply is still being generated."""


@transaction.atomic
def send_message(conversation: Conversation, content: str, after: str | None = None) -> Message:
    """Append a user message and an assistant placeholder after the message `after` (the leaf the
    page shows; default the head), and enqueue the reply. Returns the placeholder, the new head."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    head = conversation.head
    if after:
        head = Message.objects.filter(pk=after, conversation=conversation).first() or head
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
