"""The explanation panel's sections: each stored row with what it explains in context ("… says
me**ow** …", which message), and the rows a URL asks to show open (`?open=<id>,<id>`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from nlaweb.chat.models import Conversation, Message
from nlaweb.chat.tokens import InContext, content_range, in_context
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.runs import ordinal, queue_places
from nlaweb.sources import build_figures, get_source
from workers.contracts import STAGES
from workers.nla.types import MAX_POSITIONS_PER_REQUEST

ROLE_WORDS = {"user": "user message", "assistant": "assistant reply", "system": "system prompt"}


@dataclass(frozen=True)
class Section:
    """One explanation as the panel shows it."""

    e: Explanation
    #: Where the stored stage is in STAGES, so a reload marks the same step as the frames do.
    stage_index: int
    quote: InContext | None
    where: str  # "assistant reply · message 2", "chat template"
    template: bool  # the token is chat-template text, not a word of a message
    place: str = ""  # "3rd in line" while it waits in its source's queue


def section(explanation: Explanation) -> Section:
    """The row with its token quoted between its neighbours in its own snapshot."""
    stage = explanation.stage
    index = STAGES.index(stage) if stage in STAGES else 0
    snapshot = explanation.snapshot
    texts, position = snapshot.token_texts, explanation.position
    if position >= len(texts):
        return Section(explanation, index, None, "", False)
    message_spans = [s for s in snapshot.spans if s["message_id"]]
    for number, span in enumerate(message_spans, start=1):
        if span["start"] <= position < span["end"]:
            return _in_message(explanation, index, span, number)
    return Section(
        explanation, index, in_context(texts, position, 0, len(texts)), "chat template", True
    )


def _in_message(explanation: Explanation, index: int, span: dict[str, Any], number: int) -> Section:
    snapshot, position = explanation.snapshot, explanation.position
    start, end = int(span["start"]), int(span["end"])
    content = (
        Message.objects.filter(pk=span["message_id"]).values_list("content", flat=True).first()
    )
    first, last = content_range(snapshot.token_texts[start:end], content or "")
    inside = start + first <= position < start + last
    lo, hi = (start + first, start + last) if inside else (start, end)
    role = ROLE_WORDS.get(span["role"], span["role"])
    where = f"{role} · message {number}" + ("" if inside else " · template token")
    return Section(
        explanation, index, in_context(snapshot.token_texts, position, lo, hi), where, not inside
    )


def sections(explanations: Iterable[Explanation]) -> list[Section]:
    """The rows as the panel shows them; those that wait say their place in the queue."""
    rows = list(explanations)
    waiting = [e for e in rows if e.status == Explanation.Status.QUEUED]
    places = queue_places(waiting[0].source_id) if waiting else {}
    for e in waiting:
        if str(e.pk) not in places:  # a worker took it after it was read: show where it is now
            e.refresh_from_db()
    shown = [section(e) for e in rows]
    return [
        replace(s, place=f"{ordinal(places[str(s.e.pk)])} in line") if str(s.e.pk) in places else s
        for s in shown
    ]


def parse_open(raw: str) -> list[uuid.UUID]:
    """The explanation ids of an `open` query value, in order, each once; anything that is not an
    id is ignored (a hand-edited link still opens the page), at most one request's worth."""
    ids: list[uuid.UUID] = []
    for part in raw.split(","):
        try:
            value = uuid.UUID(part.strip())
        except ValueError:
            continue
        if value not in ids:
            ids.append(value)
    return ids[:MAX_POSITIONS_PER_REQUEST]


def opened(conversation: Conversation, raw: str) -> list[Explanation]:
    """The rows `raw` names that belong to this conversation, in the order named."""
    wanted = parse_open(raw)
    rows = {
        e.pk: e
        for e in Explanation.objects.select_related("snapshot").filter(
            pk__in=wanted, snapshot__conversation=conversation
        )
    }
    return [rows[i] for i in wanted if i in rows]


def panel_context(explanations: list[Explanation], error: str = "") -> dict[str, Any]:
    """What templates/explanations/panel.html needs to show these rows (or one error)."""
    source_id = explanations[0].source_id if explanations else ""
    return {
        "sections": sections(explanations),
        "error": error,
        "source": get_source(source_id),
        "figures": build_figures(source_id) if explanations else {},
        "stages": STAGES[:-1],
    }
