"""Conversations as trees of immutable messages.

A path from the root to a message is one *snapshot* of the conversation. Editing a message (a later
issue) adds a sibling and moves the conversation's head: earlier paths, their token sequences and their
explanations stay exactly as they were, so permalinks and stored explanations never go stale.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from nlaweb.jobs.liveness import gave_up, reply_gave_up, silent_before


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


class MessageQuerySet(models.QuerySet["Message"]):
    """The state changes of a reply's job (a generating placeholder): send, claim, beat, requeue,
    give up, finish, fail. The store and the sweeper call these."""

    def generating(self) -> MessageQuerySet:
        return self.filter(status=Message.Status.GENERATING)

    def untaken(self) -> MessageQuerySet:
        """Placeholders no worker took yet: the sweeper sends them."""
        return self.generating().filter(job_id="")

    def silent(self, now: datetime) -> MessageQuerySet:
        """Placeholders a worker took and then went silent on."""
        return self.generating().filter(heartbeat_at__lt=silent_before(now)).exclude(job_id="")

    def mark_sent(self, now: datetime) -> int:
        return self.generating().update(sent_at=now)

    def beat(self, job_id: str, now: datetime) -> int:
        return self.generating().filter(job_id=job_id).update(heartbeat_at=now)

    def requeue(self) -> int:
        """Untaken and unsent again; what the dead worker wrote is dropped."""
        return self.update(content="", job_id="", sent_at=None, heartbeat_at=None)

    def give_up(self, error: str) -> int:
        return self.update(status=Message.Status.FAILED, error=error, job_id="")

    def finish(self, content: str, truncated: bool) -> int:
        return self.update(
            content=content, status=Message.Status.DONE, error="", truncated=truncated
        )

    def fail(self, content: str, error: str) -> int:
        return self.update(content=content, status=Message.Status.FAILED, error=error)

    def claim(self, message_id: str, job_id: str, now: datetime) -> Message | None:
        """The placeholder, taken by `job_id` (unless another live job has it), or failed when
        workers died on it JOB_MAX_ATTEMPTS times; None when there is nothing to do. Call inside a
        transaction."""
        message = (
            self.select_for_update(skip_locked=True, of=("self",))
            .select_related("conversation")
            .generating()
            .filter(pk=message_id)
            .filter(
                Q(job_id="")
                | Q(job_id=job_id)  # redelivered: its earlier run died
                | Q(heartbeat_at__lt=silent_before(now))
            )
            .first()
        )
        if message is None:
            return None
        if gave_up(message.attempts):
            message.status, message.error = Message.Status.FAILED, reply_gave_up(message.attempts)
            message.job_id = ""
            message.save(update_fields=["status", "error", "job_id"])
            return message
        self.filter(pk=message.pk).update(
            attempts=F("attempts") + 1, heartbeat_at=now, job_id=job_id
        )
        return message


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

    class Origin(models.TextChoices):
        WRITTEN = "written"  # typed by the person (user turns), or generated by the model
        EDITED = "edited"  # an assistant turn whose text the person wrote: not generated
        REGENERATED = "regenerated"  # another sample of a reply
        CONTINUED = "continued"  # the model's text appended after an (edited) assistant turn

    #: An assistant reply stopped by the token limit (REPLY_MAX_NEW_TOKENS), not by the model.
    truncated = models.BooleanField(default=False)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.WRITTEN)
    #: How a generated reply was sampled (0: greedy), shown beside regenerated siblings.
    temperature = models.FloatField(default=0.0)
    seed = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    # A generating reply's job, as on an Explanation: sent to the broker, alive, how often taken.
    sent_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    job_id = models.CharField(max_length=64, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["status"], condition=Q(status="generating"), name="message_generating"
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    def siblings(self) -> models.QuerySet[Message]:
        """The alternatives at this point of the tree (itself included), oldest first."""
        return Message.objects.filter(
            conversation_id=self.conversation_id, parent_id=self.parent_id
        ).order_by("created_at", "id")

    def deepest_leaf(self) -> Message:
        """Follow the newest child down to a leaf: where a branch switch lands."""
        node = self
        while (child := node.children.order_by("-created_at", "-id").first()) is not None:
            node = child
        return node

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


def prefix_hashes(token_ids: Sequence[int]) -> list[str]:
    """Element p identifies the prefix `token_ids[: p + 1]` (a sha256 chain, so all of them cost one
    pass): two snapshots whose element p agree hold the same tokens up to p, hence the same
    activation at p (causal attention), whatever follows."""
    hashes, previous = [], ""
    for token in token_ids:
        previous = hashlib.sha256(f"{previous}:{int(token)}".encode()).hexdigest()
        hashes.append(previous)
    return hashes


#: Characters of a prefix hash the page carries on tokens and sections (64 bits: no two prefixes of
#: one page collide in practice, and a long thread stays light).
PREFIX_KEY_CHARS = 16


def prefix_key(prefix_hash: str) -> str:
    """The short form of a prefix hash that the page's script matches tokens and sections by."""
    return prefix_hash[:PREFIX_KEY_CHARS]


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
