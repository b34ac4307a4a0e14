"""The rows a request may read: its own user's, else 404 (the doors test holds every view to this)."""

from __future__ import annotations

from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from nlaweb.chat.models import Message, Snapshot
from nlaweb.explanations.models import Explanation


def owned_explanation(request: HttpRequest, explanation_id: str) -> Explanation:
    """The explanation, with its snapshot, of one of the user's conversations."""
    return get_object_or_404(
        Explanation.objects.select_related("snapshot"),
        pk=explanation_id,
        snapshot__conversation__owner_id=request.user.pk,
    )


def owned_message(
    request: HttpRequest, conversation_id: str, snapshot_id: str, message_id: str
) -> tuple[Snapshot, Message]:
    """A snapshot of one of the user's conversations and a message of that conversation."""
    snapshot = get_object_or_404(
        Snapshot,
        pk=snapshot_id,
        conversation_id=conversation_id,
        conversation__owner_id=request.user.pk,
    )
    return snapshot, get_object_or_404(Message, pk=message_id, conversation_id=conversation_id)
