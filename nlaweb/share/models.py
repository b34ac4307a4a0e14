"""A share: an unguessable link to one snapshot of a conversation, frozen when it was made (the set
of explanations, the title, the source's revisions), with an optional pinned token and paragraph and
a comment. Revoking flips `revoked_at`; the conversation is never touched."""

from __future__ import annotations

import secrets

from django.db import models

from nlaweb.chat.models import Conversation, Snapshot
from nlaweb.explanations.models import Explanation

#: 16 random bytes: 128 bits, 22 URL-safe characters.
SHARE_ID_BYTES = 16
COMMENT_MAX_CHARS = 512


def new_share_id() -> str:
    return secrets.token_urlsafe(SHARE_ID_BYTES)


class Share(models.Model):
    id = models.CharField(primary_key=True, max_length=32, default=new_share_id, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="shares")
    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="shares")
    #: The finished explanations of the snapshot's tokens when the link was made; later ones are
    #: not shown.
    explanations = models.ManyToManyField(Explanation, related_name="shares")
    pinned_position = models.PositiveIntegerField(null=True, blank=True)
    #: 0-based paragraph of the pinned explanation, or None for all of it.
    pinned_paragraph = models.PositiveIntegerField(null=True, blank=True)
    comment = models.CharField(max_length=COMMENT_MAX_CHARS, blank=True)
    title = models.CharField(max_length=200, blank=True)
    source_label = models.CharField(max_length=200, blank=True)
    #: {"target": …, "av": …, "ar": …} as nlaweb.share.revisions.source_revisions gave them.
    source_revisions = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    views = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Share {self.id} of {self.conversation_id}"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def pinned_token(self) -> str:
        """The pinned token's text ("" when nothing is pinned)."""
        if self.pinned_position is None:
            return ""
        texts = self.snapshot.token_texts
        return str(texts[self.pinned_position]) if self.pinned_position < len(texts) else ""
