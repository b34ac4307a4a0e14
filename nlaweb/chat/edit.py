"""Editing, regenerating, continuing and switching branches: every change adds messages to the
conversation's tree and moves its head; nothing stored is ever changed, so every earlier path keeps
its snapshot and its explanations.

- Editing a user message adds a sibling with the new text and a reply to it (generated).
- Editing an assistant message adds a sibling with the person's text; it is tokenized, not generated.
- Regenerating adds a sibling reply sampled with its own temperature and seed.
- Continuing adds a sibling that starts with the message's text and lets the model write on.
- Switching to a sibling moves the head to that branch's deepest leaf.
"""

from __future__ import annotations

from django.db import transaction

from nlaweb.chat.models import Conversation, Message
from nlaweb.jobs.broker import enqueue
from workers.contracts import TASK_REPLY

MAX_TEMPERATURE = 2.0
MAX_SEED = 2**31 - 1


class EditRejected(Exception):
    """The change cannot be made; the message is for the person."""


def _locked(conversation: Conversation) -> Conversation:
    """The conversation row locked for this transaction: concurrent edits take turns, so two
    simultaneous edits make two siblings and the head ends on the later one."""
    return Conversation.objects.select_for_update().get(pk=conversation.pk)


def _message(conversation: Conversation, message_id: str) -> Message:
    message = Message.objects.filter(pk=message_id, conversation=conversation).first()
    if message is None:
        raise EditRejected("That message is not part of this conversation.")
    return message


def _check_settled(message: Message, doing: str) -> None:
    if message.status == Message.Status.GENERATING:
        raise EditRejected(f"Wait for this reply to finish before {doing} it.")


def _move_head(conversation: Conversation, head: Message) -> Message:
    conversation.head = head
    conversation.save(update_fields=["head", "updated_at"])
    return head


def _reply_placeholder(
    conversation: Conversation, parent: Message | None, **fields: object
) -> Message:
    """An assistant message the worker writes (TASK_REPLY, after commit); the new head."""
    reply = Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.GENERATING,
        **fields,
    )
    enqueue(TASK_REPLY, str(reply.id))
    return _move_head(conversation, reply)


@transaction.atomic
def edit_message(conversation: Conversation, message_id: str, content: str) -> Message:
    """A sibling of the message with `content` (already validated); returns the new head."""
    conversation = _locked(conversation)
    original = _message(conversation, message_id)
    _check_settled(original, "editing")
    if content == original.content:
        raise EditRejected("The text is unchanged; edit it before saving.")
    if original.role == Message.Role.ASSISTANT:
        # The person's words, not the model's: the worker only tokenizes them (origin "edited").
        return _reply_placeholder(
            conversation, original.parent, content=content, origin=Message.Origin.EDITED
        )
    sibling = Message.objects.create(
        conversation=conversation, parent=original.parent, role=original.role, content=content
    )
    if original.role == Message.Role.USER:
        return _reply_placeholder(conversation, sibling)
    return _move_head(conversation, sibling)


@transaction.atomic
def regenerate(
    conversation: Conversation, message_id: str, temperature: float, seed: int
) -> Message:
    """A new sample of an assistant reply, as a sibling; returns it (the new head)."""
    conversation = _locked(conversation)
    original = _message(conversation, message_id)
    if original.role != Message.Role.ASSISTANT:
        raise EditRejected("Only an assistant reply can be regenerated.")
    _check_settled(original, "regenerating")
    if not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise EditRejected(f"Temperature must be between 0 and {MAX_TEMPERATURE:g}.")
    if not 0 <= seed <= MAX_SEED:
        raise EditRejected(f"The seed must be a whole number from 0 to {MAX_SEED}.")
    return _reply_placeholder(
        conversation,
        original.parent,
        origin=Message.Origin.REGENERATED,
        temperature=temperature,
        seed=seed,
    )


@transaction.atomic
def continue_reply(conversation: Conversation, message_id: str) -> Message:
    """A sibling that starts with the assistant message's text and goes on where it stopped."""
    conversation = _locked(conversation)
    original = _message(conversation, message_id)
    if original.role != Message.Role.ASSISTANT:
        raise EditRejected("Only an assistant reply can be continued.")
    _check_settled(original, "continuing")
    if original.children.exists():
        raise EditRejected("Only the last reply of a branch can be continued.")
    return _reply_placeholder(
        conversation,
        original.parent,
        content=original.content,
        origin=Message.Origin.CONTINUED,
        temperature=original.temperature,
        seed=original.seed,
    )


@transaction.atomic
def switch_branch(conversation: Conversation, message_id: str) -> Message:
    """Move the head to the deepest leaf below `message_id` (one of the alternatives at its place
    in the tree); returns the new head."""
    conversation = _locked(conversation)
    return _move_head(conversation, _message(conversation, message_id).deepest_leaf())
