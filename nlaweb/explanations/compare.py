"""Compare one token's explanation with the aligned token's in another branch of the conversation.

Branches are the conversation's leaves that have a snapshot. Aligned means the same position holding
the same token in the other branch's snapshot (an edit that swaps "cat" for "dog" keeps every later
position); otherwise the person picks the token in the other branch's corresponding message. A branch
whose tokens agree with this one's up to the position is left out: same tokens, same activation,
nothing to compare."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nlaweb.chat.models import Message, Snapshot, prefix_hashes
from nlaweb.chat.tokens import Token, message_tokens
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected, ExplainSettings, request_explanations

LABEL_CHARS = 70


@dataclass(frozen=True)
class Branch:
    snapshot: Snapshot
    label: str  # where this branch parts from the explained one: "assistant reply 2: “The dog…”"


def branches(explanation: Explanation) -> list[Branch]:
    """The other branches of the explanation's conversation, oldest first."""
    own = explanation.snapshot
    own_path = [m.pk for m in own.leaf.path()]
    own_prefix = explanation.prefix_hash
    leaves = Message.objects.filter(conversation_id=own.conversation_id, children__isnull=True)
    found = []
    for snapshot in Snapshot.objects.filter(leaf__in=leaves).select_related("leaf"):
        ids = snapshot.token_ids
        p = explanation.position
        if p < len(ids) and prefix_hashes(ids[: p + 1])[-1] == own_prefix:
            continue
        found.append(Branch(snapshot, _label(snapshot.leaf.path(), own_path)))
    return sorted(found, key=lambda b: b.snapshot.created_at)


def _label(path: list[Message], own_path: Sequence[object]) -> str:
    for number, message in enumerate(path, start=1):
        if number > len(own_path) or message.pk != own_path[number - 1]:
            text = " ".join(message.content.split())
            short = text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"
            return f"{message.role} · message {number}: “{short}”"
    return "this branch, continued"


def aligned_position(explanation: Explanation, other: Snapshot) -> int | None:
    """The same position when it holds the same token in `other`, or when the token's message
    spans the same positions in both (an edit swapped tokens one for one: " cat" → " dog", so one
    click compares them); else None (the person picks)."""
    p, ids = explanation.position, explanation.snapshot.token_ids
    other_ids = other.token_ids
    if p < len(other_ids) and other_ids[p] == ids[p]:
        return p
    own = _message_span(explanation.snapshot, p)
    return p if own is not None and own == _message_span(other, p) else None


def _message_span(snapshot: Snapshot, position: int) -> tuple[int, int, int] | None:
    """(index among the snapshot's messages, start, end) of the message holding `position`."""
    spans = [s for s in snapshot.spans if s["message_id"]]
    return next(
        (
            (i, s["start"], s["end"])
            for i, s in enumerate(spans)
            if s["start"] <= position < s["end"]
        ),
        None,
    )


def pick_tokens(explanation: Explanation, other: Snapshot) -> list[Token]:
    """The tokens of `other`'s message at the same place on the path as the explained token's
    message (every token of `other` when the explained one is template text)."""
    own_spans = [s for s in explanation.snapshot.spans if s["message_id"]]
    index = next(
        (i for i, s in enumerate(own_spans) if s["start"] <= explanation.position < s["end"]),
        None,
    )
    spans = [s for s in other.spans if s["message_id"]]
    if index is None or index >= len(spans):
        return message_tokens(other.token_ids, other.token_texts, 0, len(other.token_ids), "")
    span = spans[index]
    content = Message.objects.get(pk=span["message_id"]).content
    tokens = message_tokens(other.token_ids, other.token_texts, span["start"], span["end"], content)
    return [t for t in tokens if not t.template]


def compared(explanation: Explanation, other: Snapshot, position: int) -> Explanation:
    """The other branch's explanation of `position` (stored, or queued now with the same settings)."""
    if other.conversation_id != explanation.snapshot.conversation_id:
        raise ExplainRejected("That branch is not part of this conversation.")
    settings = ExplainSettings(**explanation.settings) if explanation.settings else None
    return request_explanations(other, [position], settings)[0]
