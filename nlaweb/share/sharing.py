"""Make, read, revoke and copy shares. A share freezes what the owner's page shows when it is made:
the snapshot of the current branch and the finished explanations of its tokens; a later message, edit
or explanation never changes what the link shows. Readers only read stored rows: no GPU work."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from nlaweb.chat.models import Conversation, Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import explained_rows
from nlaweb.share.models import COMMENT_MAX_CHARS, Share
from nlaweb.share.revisions import source_revisions
from nlaweb.sources.configured import get_source
from nlaweb.thread.panel import Section, opened, section
from nlaweb.thread.render import snapshot_thread
from nlaweb.thread.state import parse_ids
from nlaweb.thread.view import ThreadView, shown_leaf, thread_view

#: Longest link-preview description.
DESCRIPTION_CHARS = 200


class ShareRejected(Exception):
    """The share cannot be made as asked; the message is for the user."""


class ShareGone(Exception):
    """No such link, or its owner revoked it (`revoked`)."""

    def __init__(self, revoked: bool, owner_id: int | None = None) -> None:
        super().__init__("This link was revoked by its owner." if revoked else "No such link.")
        self.revoked = revoked
        self.owner_id = owner_id  # the revoked link's owner, who alone is sent back to their list


@dataclass(frozen=True)
class Pin:
    position: int
    paragraph: int | None = None  # 0-based; None pins the whole explanation


def page_snapshot(conversation: Conversation, at: str | None = None) -> Snapshot | None:
    """The snapshot the owner's page shows now: the branch its `at` names, else the head's."""
    return thread_view(conversation, shown_leaf(conversation, at)).snapshot


def finished_explanations(snapshot: Snapshot) -> dict[int, Explanation]:
    """Position → the finished explanation of that token prefix: what a share made now would show."""
    return {
        p: e for p, e in explained_rows(snapshot).items() if e.status == Explanation.Status.DONE
    }


def create_share(
    conversation: Conversation, pin: Pin | None, comment: str, at: str | None = None
) -> Share:
    """A new link to the snapshot the page shows (the branch `at` names, else the head's) and its
    finished explanations; ShareRejected (a sentence) when there is nothing to share or the pin
    names no finished explanation."""
    snapshot = page_snapshot(conversation, at)
    if snapshot is None:
        raise ShareRejected("Send a message first: there is nothing to share yet.")
    rows = finished_explanations(snapshot)
    _check_pin(pin, rows)
    if len(comment) > COMMENT_MAX_CHARS:
        raise ShareRejected(
            f"The comment has {len(comment)} characters; the limit is {COMMENT_MAX_CHARS}."
        )
    source = get_source(snapshot.source_id)
    with transaction.atomic():
        share = Share.objects.create(
            conversation=conversation,
            snapshot=snapshot,
            pinned_position=pin.position if pin else None,
            pinned_paragraph=pin.paragraph if pin else None,
            comment=comment,
            title=_title(conversation, snapshot),
            source_label=source.label if source else snapshot.source_id,
            source_revisions=source_revisions(source) if source else {},
        )
        share.explanations.set(rows.values())
    return share


def _title(conversation: Conversation, snapshot: Snapshot) -> str:
    """The conversation's title, else its first message's opening words."""
    if conversation.title:
        return conversation.title
    first = snapshot.leaf.path()[0].content
    return " ".join(first.split())[:80]


def _check_pin(pin: Pin | None, rows: dict[int, Explanation]) -> None:
    if pin is None:
        return
    row = rows.get(pin.position)
    if row is None:
        raise ShareRejected(
            f"Token #{pin.position} has no finished explanation to pin: explain it first, or pick "
            "another token."
        )
    count = len(row.paragraphs)
    if pin.paragraph is not None and not 0 <= pin.paragraph < count:
        raise ShareRejected(
            f"The explanation of token #{pin.position} has {count} paragraph"
            f"{'s' if count != 1 else ''}; paragraph {pin.paragraph + 1} does not exist."
        )


def shares_of(owner_id: int) -> list[Share]:
    return list(
        Share.objects.filter(conversation__owner_id=owner_id).select_related(
            "conversation", "snapshot"
        )
    )


def owned_share(owner_id: int | None, share_id: str) -> Share | None:
    return Share.objects.filter(pk=share_id, conversation__owner_id=owner_id).first()


def revoke_share(share: Share) -> None:
    """The link answers 404 from now on; the conversation and its rows stay as they are."""
    Share.objects.filter(pk=share.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    share.refresh_from_db(fields=["revoked_at"])


def live_share(share_id: str) -> Share:
    """The share behind a link; ShareGone when there is none or it was revoked."""
    share = Share.objects.select_related("snapshot", "conversation").filter(pk=share_id).first()
    if share is None or share.revoked:
        raise ShareGone(share is not None, share.conversation.owner_id if share else None)
    return share


def count_view(share: Share) -> None:
    Share.objects.filter(pk=share.pk).update(views=F("views") + 1)


@dataclass(frozen=True)
class SharedPage:
    share: Share
    thread: ThreadView
    explained: dict[int, Explanation]  # the frozen set, by position in the shared snapshot
    pinned: Explanation | None
    pinned_paragraph: str | None  # the pinned paragraph's text, when one is pinned
    open: list[Explanation]  # what the panel shows: the URL's `open` ids, else the pinned one

    @property
    def open_prefixes(self) -> set[str]:
        """The token prefixes whose explanations the panel shows (what the outline is keyed by)."""
        return {e.prefix_hash for e in self.explained.values() if e in self.open}

    @property
    def pinned_section(self) -> Section | None:
        """The pinned token quoted in context, for the heading of the page."""
        return section(self.pinned) if self.pinned else None

    @property
    def pinned_is_template(self) -> bool:
        """The pin is a chat-template token: the page unfolds template tokens so it can be seen."""
        section_ = self.pinned_section
        return bool(section_ and section_.template)

    @property
    def description(self) -> str:
        """One line for link previews (Open Graph): the comment, else the pinned finding, else the
        first message."""
        text = (
            self.share.comment or self.pinned_paragraph or (self.pinned.text if self.pinned else "")
        )
        if not text and self.thread.messages:
            text = self.thread.messages[0].message.content
        text = " ".join(text.split())
        return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 1] + "…"


def frozen_explanations(share: Share) -> dict[int, Explanation]:
    """Position in the shared snapshot → explanation, for the rows frozen into the share. A row may
    belong to another snapshot of the conversation with the same token prefix: same position."""
    rows = share.explanations.select_related("snapshot").order_by("position")
    return {e.position: e for e in rows}


def shared_page(share: Share, open_raw: str = "") -> SharedPage:
    explained = frozen_explanations(share)
    pinned = explained.get(share.pinned_position) if share.pinned_position is not None else None
    paragraph = None
    if pinned is not None and share.pinned_paragraph is not None:
        paragraphs = pinned.paragraphs
        if share.pinned_paragraph < len(paragraphs):
            paragraph = paragraphs[share.pinned_paragraph]
    by_id = {str(e.pk): e for e in explained.values()}
    opened = [by_id[i] for i in parse_ids(open_raw) if i in by_id]
    if not opened and pinned is not None:
        opened = [pinned]
    thread = snapshot_thread(share.snapshot, explained)
    return SharedPage(share, thread, explained, pinned, paragraph, opened)


def shared_explanation(share: Share, position: int) -> Explanation | None:
    """The frozen explanation at `position`, if the share has one."""
    return frozen_explanations(share).get(position)


def suggested_pin(
    conversation: Conversation, rows: dict[int, Explanation], open_raw: str
) -> int | None:
    """The position of the first explanation the owner's page has open (its `open` ids), if it is
    one a share would include: what they were looking at is what they mean to pin."""
    position_of = {e.prefix_hash: p for p, e in rows.items()}
    for row in opened(conversation, parse_ids(open_raw)):
        if row.prefix_hash in position_of:
            return position_of[row.prefix_hash]
    return None
