"""The explanation panel's sections: each stored row with what it explains in context ("… says
me**ow** …", which message), and the rows a URL asks to show open (`?open=<id>,<id>`)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from nlaweb.chat.models import Conversation, Message
from nlaweb.chat.tokens import InContext, content_range, in_context
from nlaweb.explanations.generic import generic_count, repeats
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import explained_rows
from nlaweb.sources.configured import build_figures, get_source
from workers.contracts import STAGES, in_line

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
    #: How many explained tokens of its message carry the same text, when that makes it generic
    #: (nlaweb/explanations/generic.py); 0 otherwise.
    generic: int = 0
    explained_in_message: int = 0  # the message's explained tokens (done), for the generic note


def section(explanation: Explanation, scope: Mapping[int, Explanation] | None = None) -> Section:
    """The row with its token quoted between its neighbours in its own snapshot; `scope` (position
    → row; default: the stored rows of the snapshot's prefixes) is what the generic flag counts."""
    stage = explanation.stage
    index = STAGES.index(stage) if stage in STAGES else 0
    snapshot = explanation.snapshot
    texts, position = snapshot.token_texts, explanation.position
    if position >= len(texts):
        return Section(explanation, index, None, "", False)
    message_spans = [s for s in snapshot.spans if s["message_id"]]
    for number, span in enumerate(message_spans, start=1):
        if span["start"] <= position < span["end"]:
            return _in_message(explanation, index, span, number, scope)
    return Section(
        explanation, index, in_context(texts, position, 0, len(texts)), "chat template", True
    )


def _in_message(
    explanation: Explanation,
    index: int,
    span: dict[str, Any],
    number: int,
    scope: Mapping[int, Explanation] | None,
) -> Section:
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
    shared, explained = _generic(explanation, start, end, scope)
    return Section(
        explanation,
        index,
        in_context(snapshot.token_texts, position, lo, hi),
        where,
        not inside,
        generic=shared,
        explained_in_message=explained,
    )


def _generic(
    explanation: Explanation, start: int, end: int, scope: Mapping[int, Explanation] | None
) -> tuple[int, int]:
    """(tokens of the message sharing this row's text when it is generic, else 0; the message's
    explained tokens), over the finished rows of the message's token prefixes (or of `scope`: a
    share's frozen set, so a later explanation never changes what its link shows)."""
    if explanation.status != Explanation.Status.DONE or not explanation.text.strip():
        return 0, 0
    rows = scope if scope is not None else explained_rows(explanation.snapshot)
    texts = [
        r.text for p, r in rows.items() if start <= p < end and r.status == Explanation.Status.DONE
    ]
    counts, explained = repeats(texts)
    return generic_count(explanation.text, counts, explained), explained


def sections(
    explanations: Iterable[Explanation], scope: Mapping[int, Explanation] | None = None
) -> list[Section]:
    """The rows as the panel shows them; those that wait say their place in the queue."""
    rows = list(explanations)
    waiting = [e for e in rows if e.status == Explanation.Status.QUEUED]
    places = Explanation.objects.queue_places(waiting[0].source_id) if waiting else {}
    for e in waiting:
        if str(e.pk) not in places:  # a worker took it after it was read: show where it is now
            e.refresh_from_db()
    shown = [section(e, scope) for e in rows]
    return [
        replace(s, place=in_line(places[str(s.e.pk)])) if str(s.e.pk) in places else s
        for s in shown
    ]


def opened(
    conversation: Conversation, ids: Iterable[str], prefixes: Collection[str] | None = None
) -> list[Explanation]:
    """The rows `ids` names (an `open=` link's, nlaweb.thread.state.parse_ids) that belong to this
    conversation, in the order named; with `prefixes`
    (the token-prefix hashes of the thread on screen), only rows of those prefixes: a row of another
    branch at the same position explains another token and stays closed."""
    wanted = [uuid.UUID(i) for i in ids]
    rows = {
        e.pk: e
        for e in Explanation.objects.select_related("snapshot").filter(
            pk__in=wanted, snapshot__conversation=conversation
        )
    }
    shown = [rows[i] for i in wanted if i in rows]
    if prefixes is None:
        return shown
    return [e for e in shown if e.prefix_hash in prefixes]


def batch_status(sections: list[Explanation]) -> str:
    """ "2 of 3 finished" when the panel shows several sections, else ""."""
    if len(sections) < 2:
        return ""
    finished = sum(e.status not in (e.Status.QUEUED, e.Status.RUNNING) for e in sections)
    return f"{finished} of {len(sections)} finished"


def panel_context(
    explanations: list[Explanation],
    error: str = "",
    scope: Mapping[int, Explanation] | None = None,
) -> dict[str, Any]:
    """What templates/explanations/panel.html needs to show these rows (or one error); `scope`
    as for `section`."""
    source_id = explanations[0].source_id if explanations else ""
    return {
        "sections": sections(explanations, scope),
        "error": error,
        "source": get_source(source_id),
        "figures": build_figures(source_id) if explanations else {},
        "stages": STAGES[:-1],
        "batch_status": batch_status(explanations),
    }
