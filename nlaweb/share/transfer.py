"""Export a conversation as one JSON document, import one as a new conversation of the importing
user, and copy a share's branch into a reader's account (an import of that branch). An import
checks everything before it writes, writes in one transaction, and refuses with one sentence."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.db import DataError, transaction
from django.utils import timezone
from pydantic import ValidationError

from nlaweb.chat.models import Conversation, Message, Snapshot, hash_tokens, prefix_hashes
from nlaweb.explanations.models import Explanation
from nlaweb.share.document import (
    FORMAT,
    MAX_IMPORT_BYTES,
    VERSION,
    ConversationDoc,
    ExplanationDoc,
    MessageDoc,
    SnapshotDoc,
    SourceDoc,
    SpanDoc,
)
from nlaweb.share.models import Share
from nlaweb.share.revisions import source_revisions
from nlaweb.share.sharing import frozen_explanations
from nlaweb.sources.configured import configured_sources, get_source

_FINISHED = (Explanation.Status.DONE, Explanation.Status.FAILED)
_ROLE_NAMES = {"target": "target model", "av": "AV", "ar": "AR"}


class ImportRejected(Exception):
    """The file cannot be imported; the message (one sentence) names the problem."""


# -- export ---------------------------------------------------------------------------------------
def export_conversation(conversation: Conversation) -> ConversationDoc:
    """Every finished message of the tree (a reply still being written is left out), every snapshot
    ending at one, and every finished explanation of those snapshots."""
    messages = _tree_order(
        conversation.messages.exclude(status=Message.Status.GENERATING).order_by("created_at")
    )
    kept = {m.id for m in messages}
    snapshots = [s for s in conversation.snapshots.all() if s.leaf_id in kept]
    order = {m.id: i for i, m in enumerate(messages)}
    snapshots.sort(key=lambda s: order[s.leaf_id])
    explanations = Explanation.objects.filter(
        snapshot__in=snapshots, status__in=_FINISHED
    ).order_by("created_at", "id")
    return _document(conversation, messages, _head(conversation, kept), snapshots, explanations)


def branch_document(share: Share) -> ConversationDoc:
    """The shared branch only: the path to the shared snapshot and its frozen explanations, each
    placed on that snapshot (a row found by token prefix may belong to another one)."""
    snapshot = share.snapshot
    rows = list(frozen_explanations(share).values())
    doc = _document(share.conversation, snapshot.leaf.path(), snapshot.leaf_id, [snapshot], rows)
    placed = [e.model_copy(update={"snapshot": snapshot.id}) for e in doc.explanations]
    return doc.model_copy(update={"title": share.title, "explanations": placed})


def export_json(doc: ConversationDoc) -> bytes:
    return doc.model_dump_json().encode()


def _tree_order(messages: Iterable[Message]) -> list[Message]:
    """Parents before children, siblings oldest first (depth first), whatever the clocks said."""
    children: dict[uuid.UUID | None, list[Message]] = defaultdict(list)
    listed = list(messages)
    ids = {m.id for m in listed}
    for m in listed:
        children[m.parent_id if m.parent_id in ids else None].append(m)
    ordered: list[Message] = []
    stack = list(reversed(children[None]))
    while stack:
        message = stack.pop()
        ordered.append(message)
        stack.extend(reversed(children[message.id]))
    return ordered


def _head(conversation: Conversation, kept: set[uuid.UUID]) -> uuid.UUID | None:
    node = conversation.head
    while node is not None and node.id not in kept:
        node = node.parent
    return node.id if node else None


def _document(
    conversation: Conversation,
    messages: list[Message],
    head: uuid.UUID | None,
    snapshots: list[Snapshot],
    explanations: Iterable[Explanation],
) -> ConversationDoc:
    rows = list(explanations)
    used = {conversation.source_id, *(s.source_id for s in snapshots), *(e.source_id for e in rows)}
    return ConversationDoc(
        format=FORMAT,
        version=VERSION,
        exported_at=timezone.now(),
        title=conversation.title,
        source_id=conversation.source_id,
        head=head,
        created_at=conversation.created_at,
        sources=[_source_doc(source_id) for source_id in sorted(used)],
        messages=[_message_doc(m) for m in messages],
        snapshots=[_snapshot_doc(s) for s in snapshots],
        explanations=[_explanation_doc(e) for e in rows],
    )


def _source_doc(source_id: str) -> SourceDoc:
    source = get_source(source_id)
    if source is None:  # no longer configured here: the file says so, and no server imports it
        return SourceDoc(id=source_id, label=source_id, revisions={})
    return SourceDoc.model_validate(
        {"id": source.id, "label": source.label, "revisions": source_revisions(source)}
    )


def _message_doc(m: Message) -> MessageDoc:
    return MessageDoc.model_validate(
        {
            "id": m.id,
            "parent": m.parent_id,
            "role": m.role,
            "content": m.content,
            "status": m.status,
            "error": m.error,
            "truncated": m.truncated,
            "origin": m.origin,
            "temperature": m.temperature,
            "seed": m.seed,
            "created_at": m.created_at,
        }
    )


def _snapshot_doc(s: Snapshot) -> SnapshotDoc:
    return SnapshotDoc(
        id=s.id,
        leaf=s.leaf_id,
        source_id=s.source_id,
        token_ids=s.token_ids,
        token_texts=s.token_texts,
        spans=[SpanDoc.model_validate(span) for span in s.spans],
        created_at=s.created_at,
    )


#: Explanation columns copied as they are (ids, keys and hashes are handled apart).
_EXPLANATION_FIELDS = [
    name
    for name in ExplanationDoc.model_fields
    if name not in {"id", "snapshot", "position", "source_id"}
]


def _explanation_doc(e: Explanation) -> ExplanationDoc:
    values = {name: getattr(e, name) for name in _EXPLANATION_FIELDS}
    return ExplanationDoc.model_validate(
        {
            **values,
            "id": e.id,
            "snapshot": e.snapshot_id,
            "position": e.position,
            "source_id": e.source_id,
        }
    )


# -- import ---------------------------------------------------------------------------------------
def import_bytes(owner: User, data: bytes) -> Conversation:
    """A new conversation of `owner` from an export file; ImportRejected (one sentence) when the file
    is too large, not JSON, cut short, not an export, inconsistent, or made with checkpoints this
    server does not serve. Nothing is written unless everything is."""
    return import_document(owner, parse_document(data))


def parse_document(data: bytes) -> ConversationDoc:
    raw = _json_object(data)
    if raw.get("format") != FORMAT:
        raise ImportRejected(
            f"This file is not an nlaweb conversation export: its format is "
            f"{raw.get('format')!r}, not '{FORMAT}'."
        )
    if raw.get("version") != VERSION:
        raise ImportRejected(
            f"This export has version {raw.get('version')!r}; this server reads version {VERSION}."
        )
    try:
        doc = ConversationDoc.model_validate(raw)
    except ValidationError as exc:
        raise ImportRejected(_sentence(exc)) from None
    _check_served(doc)
    return doc


def check_size(size: int) -> None:
    if size > MAX_IMPORT_BYTES:
        raise ImportRejected(
            f"This file is {size:,} bytes; the limit is {MAX_IMPORT_BYTES // 1024 // 1024} MB "
            f"({MAX_IMPORT_BYTES:,} bytes)."
        )


def _json_object(data: bytes) -> dict[str, Any]:
    check_size(len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportRejected(
            "This file is not UTF-8 text, so it is not an nlaweb export."
        ) from None
    if not text.strip():
        raise ImportRejected("This file is empty.")
    try:
        raw = json.loads(text, parse_constant=_no_constants)
    except ImportRejected:
        raise
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise ImportRejected(
                f"This file stops in the middle of its JSON (after {len(text)} characters): it "
                "looks truncated; export the conversation again."
            ) from None
        raise ImportRejected(
            f"This file is not valid JSON: {exc.msg.lower()} at line {exc.lineno}, column {exc.colno}."
        ) from None
    if not isinstance(raw, dict):
        raise ImportRejected(
            "This file holds JSON but not an nlaweb conversation export (no 'format' field)."
        )
    return raw


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON (Python reads them; PostgreSQL's jsonb does not)."""
    raise ImportRejected(
        f"This file is not valid JSON: it holds {name}, which JSON does not allow."
    )


def _sentence(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    if error["type"] == "value_error":
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"This export does not hold together: {reason}."
    where = ".".join(str(part) for part in error["loc"]) or "the document"
    return f"This export is not valid at {where}: {error['msg'][0].lower()}{error['msg'][1:]}."


def _check_served(doc: ConversationDoc) -> None:
    served = ", ".join(f"'{s.id}'" for s in configured_sources()) or "none"
    for listed in sorted(doc.sources, key=lambda s: s.id):
        if listed.id not in doc.source_ids():
            continue
        here = get_source(listed.id)
        if here is None:
            raise ImportRejected(
                f"This file was made with source '{listed.id}', which this server does not serve "
                f"(it serves {served})."
            )
        mine = source_revisions(here)
        for role, name in _ROLE_NAMES.items():
            theirs = listed.revisions.get(role, "unknown")  # type: ignore[call-overload]
            if theirs != mine[role]:
                raise ImportRejected(
                    f"This file was made with source '{listed.id}' at {name} revision {theirs}, "
                    f"but this server has {mine[role]}, so its explanations would not match."
                )


def import_document(owner: User, doc: ConversationDoc) -> Conversation:
    """Write `doc` as a new conversation of `owner`, every row with a new id, times as in the file,
    in one transaction: a value the database refuses (a NUL character in a text, say) leaves
    nothing behind and comes back as ImportRejected."""
    try:
        return _write(owner, doc)
    except DataError as exc:
        reason = str(exc).strip().splitlines()[0].rstrip(".")
        raise ImportRejected(
            f"This file holds a value the database cannot store ({reason})."
        ) from None


@transaction.atomic
def _write(owner: User, doc: ConversationDoc) -> Conversation:
    conversation = Conversation.objects.create(
        owner=owner, title=doc.title, source_id=doc.source_id
    )
    new_id = {m.id: uuid.uuid4() for m in doc.messages}
    messages = [_message(conversation, m, new_id) for m in doc.messages]
    Message.objects.bulk_create(messages)
    snapshots = {s.id: _snapshot(conversation, s, new_id) for s in doc.snapshots}
    Snapshot.objects.bulk_create(snapshots.values())
    hashes = {old: prefix_hashes(s.token_ids) for old, s in snapshots.items()}
    explanations = [
        _explanation(e, snapshots[e.snapshot], hashes[e.snapshot]) for e in doc.explanations
    ]
    Explanation.objects.bulk_create(explanations)
    _restore_times(messages, [m.created_at for m in doc.messages])
    _restore_times(list(snapshots.values()), [s.created_at for s in doc.snapshots])
    _restore_times(explanations, [e.created_at for e in doc.explanations])
    conversation.head_id = new_id[doc.head] if doc.head else None
    conversation.created_at = doc.created_at
    conversation.save(update_fields=["head", "created_at", "updated_at"])
    return conversation


def _message(
    conversation: Conversation, m: MessageDoc, new_id: dict[uuid.UUID, uuid.UUID]
) -> Message:
    return Message(
        id=new_id[m.id],
        conversation=conversation,
        parent_id=new_id[m.parent] if m.parent else None,
        role=m.role,
        content=m.content,
        status=m.status,
        error=m.error,
        truncated=m.truncated,
        origin=m.origin,
        temperature=m.temperature,
        seed=m.seed,
    )


def _snapshot(
    conversation: Conversation, s: SnapshotDoc, new_id: dict[uuid.UUID, uuid.UUID]
) -> Snapshot:
    spans = [
        {
            "message_id": str(new_id[span.message_id]) if span.message_id else None,
            "role": span.role,
            "start": span.start,
            "end": span.end,
        }
        for span in s.spans
    ]
    return Snapshot(
        id=uuid.uuid4(),
        conversation=conversation,
        leaf_id=new_id[s.leaf],
        source_id=s.source_id,
        token_ids=s.token_ids,
        token_texts=s.token_texts,
        spans=spans,
        tokens_hash=hash_tokens(s.token_ids),
    )


def _explanation(e: ExplanationDoc, snapshot: Snapshot, hashes: list[str]) -> Explanation:
    values = {name: getattr(e, name) for name in _EXPLANATION_FIELDS}
    return Explanation(
        **values,
        id=uuid.uuid4(),
        snapshot=snapshot,
        position=e.position,
        source_id=e.source_id,
        prefix_hash=hashes[e.position],
    )


def _restore_times(rows: list[Any], times: list[Any]) -> None:
    """bulk_create stamps `created_at` with now (auto_now_add); put the file's times back."""
    if not rows:
        return
    for row, when in zip(rows, times, strict=True):
        row.created_at = when
    type(rows[0]).objects.bulk_update(rows, ["created_at"], batch_size=500)


def fork_share(share: Share, owner: User) -> Conversation:
    """Copy a share's branch and its frozen explanations into `owner`'s conversations (no
    revision check: the rows are this server's own)."""
    return import_document(owner, branch_document(share))
