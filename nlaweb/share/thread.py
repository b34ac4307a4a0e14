"""A snapshot as the read-only page shows it: the path root → its leaf with token chips, each chip
knowing only the explanations given to it (a share's frozen set), never the live ones.

It builds the same ThreadView as nlaweb.chat.conversation.thread_view, for a fixed snapshot and a
fixed set of explanations instead of the conversation's head and every stored row."""

from __future__ import annotations

from collections.abc import Mapping

from nlaweb.chat.conversation import Branches, Chip, RenderedMessage, ThreadView
from nlaweb.chat.models import Snapshot
from nlaweb.chat.tokens import Token, message_tokens, template_tokens
from nlaweb.explanations.models import Explanation

#: A share shows one branch: no alternatives to switch to.
ONE_BRANCH = Branches(index=1, count=1, previous=None, next=None)


def snapshot_thread(snapshot: Snapshot, explained: Mapping[int, Explanation]) -> ThreadView:
    ids, texts = snapshot.token_ids, snapshot.token_texts

    def chips(tokens: list[Token]) -> list[Chip]:
        return [
            Chip(t.position, t.text, t.token_id, t.template, explained.get(t.position))
            for t in tokens
        ]

    spans = snapshot.spans_by_message()
    path = snapshot.leaf.path()
    rendered = []
    for number, message in enumerate(path, start=1):
        span = spans.get(str(message.id))
        tokens = (
            message_tokens(ids, texts, span["start"], span["end"], message.content)
            if span
            else None
        )
        chipped = chips(tokens) if tokens else None
        rendered.append(RenderedMessage(message, chipped, number, ONE_BRANCH, number == len(path)))
    message_spans = [s for s in snapshot.spans if s["message_id"]]
    first = min((s["start"] for s in message_spans), default=0)
    last = max((s["end"] for s in message_spans), default=0)
    lead = chips(template_tokens(ids, texts, 0, first))
    tail = chips(template_tokens(ids, texts, last, len(ids)))
    return ThreadView(snapshot.conversation, snapshot, rendered, lead, tail)
