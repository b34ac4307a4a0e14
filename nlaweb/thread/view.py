"""The thread as the page shows it: which leaf shows, its messages as prose of token chips with their
tints and branch switches (ThreadView). The chat page, the explanation views and a share's frozen
page all render this."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Q

from nlaweb.chat.models import Conversation, Message, Snapshot, prefix_hashes, prefix_key
from nlaweb.chat.tokens import Token, message_tokens, template_tokens
from nlaweb.explanations.models import ExplainRun, Explanation
from nlaweb.explanations.request import explained_rows
from nlaweb.explanations.runs import RunProgress, progress

#: Relative MSE at and above which a token takes the heatmap's coldest tint (1 is the mean's error).
HEAT_CEILING = 1.5


@dataclass(frozen=True)
class Chip:
    """One token as the page shows it: a clickable piece of prose, or a folded template chip."""

    position: int
    text: str
    token_id: int
    template: bool
    explained: Explanation | None  # the stored explanation of this token prefix, if any
    #: The token prefix's hash (nlaweb.chat.models.prefix_hashes): what tints, the open outline and
    #: open sections are keyed by, never the bare position, which another branch shares.
    prefix: str = ""

    @property
    def prefix_key(self) -> str:
        """The short form of `prefix` the page's script matches sections and tokens by."""
        return prefix_key(self.prefix)

    @property
    def whitespace(self) -> bool:
        """A word-less token (a newline, spaces): prose shows it raw, the template view as a glyph."""
        return not self.text.strip()

    @property
    def heat(self) -> str:
        """Relative MSE mapped to [0, 1] for the fidelity heatmap (0 best; from 1.5 on, 1), or ""."""
        e = self.explained
        if e is None or e.status != e.Status.DONE or e.relative_mse is None:
            return ""
        return f"{min(max(e.relative_mse, 0.0), HEAT_CEILING) / HEAT_CEILING:.2f}"

    @property
    def confidence(self) -> str:
        """The tint of an explained chip: its confidence, or `pending` while it is in progress."""
        e = self.explained
        if e is None:
            return ""
        return (e.confidence or "unscored") if e.status == e.Status.DONE else "pending"

    @property
    def classes(self) -> str:
        """Its CSS classes past `tok`: what kind of token (`tpl`, `ws`), and its tint once explained
        (`explained high`); the page's own state (open, pinned, read-only) is the template's."""
        kind = "tpl" if self.template else "ws" if self.whitespace else ""
        tint = f"explained {self.confidence}" if self.explained else ""
        return " ".join(part for part in (kind, tint) if part)

    @property
    def title(self) -> str:
        """The hover text: `token #5 · id 42 · explained (high, relative MSE 0.31)`."""
        title = f"token #{self.position} · id {self.token_id}"
        e = self.explained
        if e is None:
            return title
        scored = f", relative MSE {e.relative_mse:.2f}" if e.relative_mse is not None else ""
        return f"{title} · explained ({self.confidence}{scored})"


@dataclass(frozen=True)
class Branches:
    """Where a message sits among its alternatives (edits, regenerations) at its place in the tree."""

    index: int  # 1-based
    count: int
    previous: Message | None
    next: Message | None


@dataclass(frozen=True)
class RenderedMessage:
    message: Message
    chips: list[Chip] | None  # None: not tokenized yet (show the plain text)
    number: int  # 1-based place on the path
    branches: Branches
    is_last: bool
    run: ExplainRun | None = None  # the latest "explain this whole message" of this message
    run_progress: RunProgress | None = None

    @property
    def has_content_chips(self) -> bool:
        return any(not c.template for c in self.chips or [])


@dataclass(frozen=True)
class ThreadView:
    conversation: Conversation
    snapshot: Snapshot | None
    messages: list[RenderedMessage]
    lead_chips: list[Chip]  # template tokens before the first message (BOS, a system prompt)
    tail_chips: list[Chip]  # template tokens after the last message (a generation prompt)

    @property
    def leaf(self) -> Message | None:
        return self.messages[-1].message if self.messages else None

    @property
    def generating(self) -> Message | None:
        last = self.messages[-1].message if self.messages else None
        return last if last and last.status == Message.Status.GENERATING else None


def shown_leaf(conversation: Conversation, leaf_id: str | None) -> Message | None:
    """The message a page asks to show the path to (`?at=`), if it is of this conversation; else
    the head. Showing never moves the head: only edits and branch switches do."""
    if leaf_id:
        try:
            found = Message.objects.filter(pk=leaf_id, conversation=conversation).first()
        except ValidationError:  # not an id at all: the head, as for an unknown one
            found = None
        if found is not None:
            return found
    return conversation.head


def _branches(path: list[Message]) -> list[Branches]:
    """Each path message's place among its siblings, from one query."""
    if not path:
        return []
    parents = {m.parent_id for m in path}
    conversation_id = path[0].conversation_id
    by_parent: dict[object, list[Message]] = {}
    rows = Message.objects.filter(conversation_id=conversation_id).order_by("created_at", "id")
    for m in rows.filter(Q(parent_id__in=[p for p in parents if p]) | Q(parent__isnull=True)):
        by_parent.setdefault(m.parent_id, []).append(m)
    result = []
    for message in path:
        siblings = by_parent.get(message.parent_id, [message])
        i = next((k for k, s in enumerate(siblings) if s.pk == message.pk), 0)
        before = siblings[i - 1] if i > 0 else None
        after = siblings[i + 1] if i + 1 < len(siblings) else None
        result.append(Branches(i + 1, len(siblings), before, after))
    return result


def thread_view(conversation: Conversation, leaf: Message | None = None) -> ThreadView:
    """The path to `leaf` (default the head) with token chips from the deepest snapshot on it, each
    chip knowing whether (and how well) it was explained, each message its alternatives."""
    leaf = leaf or conversation.head
    path = leaf.path() if leaf else []
    branches = _branches(path)
    snapshot = _deepest_snapshot(path)
    last = len(path)
    if snapshot is None:
        rendered = [
            RenderedMessage(m, None, i + 1, branches[i], i + 1 == last) for i, m in enumerate(path)
        ]
        return ThreadView(conversation, None, rendered, [], [])
    latest_runs = {
        r.message_id: r for r in ExplainRun.objects.filter(message__in=path).order_by("created_at")
    }
    runs = [latest_runs.get(m.pk) for m in path]
    return render_thread(conversation, snapshot, path, explained_rows(snapshot), branches, runs)


def render_thread(
    conversation: Conversation,
    snapshot: Snapshot,
    path: list[Message],
    explained: Mapping[int, Explanation],
    branches: list[Branches],
    runs: list[ExplainRun | None],
) -> ThreadView:
    """The messages of `path` as the snapshot's chips, each tinted by `explained` (position → row),
    with its place among alternatives and its latest whole-message run (both one per message)."""
    ids, texts = snapshot.token_ids, snapshot.token_texts
    hashes = prefix_hashes(ids)

    def chips(tokens: list[Token]) -> list[Chip]:
        return [
            Chip(
                t.position,
                t.text,
                t.token_id,
                t.template,
                explained.get(t.position),
                hashes[t.position],
            )
            for t in tokens
        ]

    spans = snapshot.spans_by_message()
    rendered = []
    for number, message in enumerate(path, start=1):
        span = spans.get(str(message.id))
        tokens = (
            message_tokens(ids, texts, span["start"], span["end"], message.content)
            if span
            else None
        )
        run = runs[number - 1]
        rendered.append(
            RenderedMessage(
                message,
                chips(tokens) if tokens else None,
                number,
                branches[number - 1],
                number == len(path),
                run,
                progress(run) if run else None,
            )
        )
    starts = [s["start"] for s in snapshot.spans if s["message_id"]] or [0]
    ends = [s["end"] for s in snapshot.spans if s["message_id"]] or [0]
    lead = chips(template_tokens(ids, texts, 0, min(starts)))
    tail = chips(template_tokens(ids, texts, max(ends), len(ids)))
    return ThreadView(conversation, snapshot, rendered, lead, tail)


def _deepest_snapshot(path: list[Message]) -> Snapshot | None:
    ids = [m.id for m in path]
    snapshots = {s.leaf_id: s for s in Snapshot.objects.filter(leaf_id__in=ids)}
    for message in reversed(path):
        if message.id in snapshots:
            return snapshots[message.id]
    return None
