"""Conversations as trees of immutable messages.

A path from the root to a message is one *snapshot* of the conversation. Editing a message (a later
issue) adds a sibling and moves the conversation's head: earlier paths, their token sequences and their
explanations stay exactly as they were, so permalinks and stored explanations never go stale.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    source_id = models.CharField(max_length=100)
    head = models.ForeignKey(
        "chat.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.id}"

    def path(self) -> list[Message]:
        """Messages from the root to the head, in order."""
        return self.head.path() if self.head else []


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        GENERATING = "generating"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DONE)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # A generating reply's job, as on an Explanation: sent to the broker, alive, how often taken.
    sent_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    job_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["status"], condition=Q(status="generating"), name="message_generating"
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    def path(self) -> list[Message]:
        """This message's ancestors and itself, root first."""
        chain: list[Message] = []
        node: Message | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        return chain[::-1]


def hash_tokens(token_ids: list[int]) -> str:
    """sha256 of a token sequence; equal prefixes of equal sequences hash alike."""
    return hashlib.sha256(json.dumps(token_ids).encode()).hexdigest()


class Snapshot(models.Model):
    """The target's chat-templated token sequence of the path root → `leaf`. Immutable."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="snapshots"
    )
    leaf = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="snapshot")
    source_id = models.CharField(max_length=100)
    token_ids = models.JSONField()
    token_texts = models.JSONField()
    #: [{"message_id": str | None, "role": str, "start": int, "end": int}], end exclusive; a span
    #: with message_id None is template text that belongs to no message (e.g. a generation prompt).
    spans = models.JSONField()
    tokens_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Snapshot {self.id} ({len(self.token_ids)} tokens)"

    def spans_by_message(self) -> dict[str, dict[str, Any]]:
        return {s["message_id"]: s for s in self.spans if s["message_id"]}

    def chips(self, start: int, end: int) -> list[dict[str, Any]]:
        """Token chips of positions [start, end) for the template."""
        return [
            {"position": p, "text": self.token_texts[p], "token_id": self.token_ids[p]}
            for p in range(start, end)
        ]
