"""Rows for tests that need a stored conversation without running a model: messages chained from
the root, and a snapshot of synthetic token ids whose spans give each message its share."""

from __future__ import annotations

from collections.abc import Sequence

from nlaweb.chat.models import Conversation, Message, Snapshot, hash_tokens

#: (role, content, tokens) of each message; the default is a user turn and the reply to it.
CHAT: tuple[tuple[str, str, int], ...] = (("user", "My cat", 6), ("assistant", "Cats nap.", 6))


def snapshot_of(
    conversation: Conversation,
    turns: Sequence[tuple[str, str, int]] = CHAT,
    source_id: str | None = None,
    first_token: int = 100,
) -> Snapshot:
    """Store `turns` as the conversation's head path and a snapshot of ids `first_token`, +1, …"""
    parent, spans, start = None, [], 0
    for role, content, count in turns:
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role=role, content=content
        )
        spans.append(
            {"message_id": str(parent.id), "role": role, "start": start, "end": start + count}
        )
        start += count
    assert parent is not None
    conversation.head = parent
    conversation.save()
    ids = list(range(first_token, first_token + start))
    return Snapshot.objects.create(
        conversation=conversation,
        leaf=parent,
        source_id=source_id or conversation.source_id,
        token_ids=ids,
        token_texts=[f"t{i}" for i in ids],
        spans=spans,
        tokens_hash=hash_tokens(ids),
    )
