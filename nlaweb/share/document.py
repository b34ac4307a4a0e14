"""The export file: one conversation (every message of its tree, its snapshots, its finished
explanations) with the checkpoint revisions of its sources, validated with pydantic on the way in.
Ids are the exporter's; an import gives every row a new one. Derived columns (token hashes, prefix
hashes) are left out and recomputed."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT: Literal["nlaweb.conversation"] = "nlaweb.conversation"
VERSION: Literal[1] = 1
#: The largest file an import reads.
MAX_IMPORT_BYTES = 20 * 1024 * 1024

SourceId = Annotated[str, Field(min_length=1, max_length=100)]
#: Positions and token ids fit the database's 32-bit integer columns.
Position = Annotated[int, Field(ge=0, lt=2**31)]
TokenId = Annotated[int, Field(ge=0, lt=2**31)]
Int32 = Annotated[int, Field(ge=-(2**31), lt=2**31)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceDoc(_Strict):
    id: SourceId
    label: str = Field(max_length=200)
    #: {"target": …, "av": …, "ar": …}: a hub revision, or a fingerprint of a local directory.
    revisions: dict[Literal["target", "av", "ar"], str]


class MessageDoc(_Strict):
    id: uuid.UUID
    parent: uuid.UUID | None
    role: Literal["system", "user", "assistant"]
    content: str
    status: Literal["done", "failed"]
    error: str = ""
    truncated: bool = False
    origin: Literal["written", "edited", "regenerated", "continued"] = "written"
    temperature: float = Field(default=0.0, ge=0)
    seed: Int32 = 0
    created_at: datetime


class SpanDoc(_Strict):
    message_id: uuid.UUID | None
    role: str = Field(max_length=16)
    start: Position
    end: Position


class SnapshotDoc(_Strict):
    id: uuid.UUID
    leaf: uuid.UUID
    source_id: SourceId
    token_ids: list[TokenId]
    token_texts: list[str]
    spans: list[SpanDoc]
    created_at: datetime


class ExplanationDoc(_Strict):
    id: uuid.UUID
    snapshot: uuid.UUID
    position: Position
    source_id: SourceId
    settings_key: str = Field(max_length=200)
    settings: dict[str, float | int | None]
    status: Literal["done", "failed"]
    stage: str = Field(max_length=32)
    token_id: TokenId | None
    token_text: str = Field(max_length=200)
    text: str
    raw_text: str
    truncated: bool
    mse: float | None
    cosine: float | None
    fve: float | None
    relative_mse: float | None
    confidence: str = Field(max_length=16)
    l2_norm: float | None
    specificity: float | None = None  # absent from files written before it existed
    # Where the score fell on the source's scale and the pill's sentence, as the page showed them
    # (absent from files written before calibrated confidence existed).
    calibration: Literal["", "matched", "between", "shuffled"] = ""
    confidence_note: str = Field(default="", max_length=2000)
    warnings: list[str]
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ConversationDoc(_Strict):
    format: Literal["nlaweb.conversation"]
    version: Literal[1]
    exported_at: datetime
    title: str = Field(max_length=200)
    source_id: SourceId
    head: uuid.UUID | None
    created_at: datetime
    sources: list[SourceDoc]
    messages: list[MessageDoc]
    snapshots: list[SnapshotDoc]
    explanations: list[ExplanationDoc]

    @model_validator(mode="after")
    def _consistent(self) -> ConversationDoc:
        """Every reference points at something in the file (one sentence for the first that does
        not), so an import never writes half a conversation."""
        _check_sources(self)
        _check_messages(self)
        _check_snapshots(self)
        _check_explanations(self)
        return self

    def source_ids(self) -> set[str]:
        return (
            {self.source_id}
            | {s.source_id for s in self.snapshots}
            | {e.source_id for e in self.explanations}
        )


T = TypeVar("T")


def _duplicate(values: list[T]) -> T | None:
    return next((v for v, n in Counter(values).items() if n > 1), None)


def _check_sources(doc: ConversationDoc) -> None:
    listed = [s.id for s in doc.sources]
    if (twice := _duplicate(listed)) is not None:
        raise ValueError(f"source '{twice}' is listed twice")
    missing = sorted(doc.source_ids() - set(listed))
    if missing:
        raise ValueError(f"source '{missing[0]}' is used but not listed under 'sources'")


def _check_messages(doc: ConversationDoc) -> None:
    seen: set[uuid.UUID] = set()
    for m in doc.messages:
        if m.id in seen:
            raise ValueError(f"message {m.id} is listed twice")
        if m.parent is not None and m.parent not in seen:
            raise ValueError(
                f"message {m.id} names parent {m.parent}, which is not listed before it"
            )
        seen.add(m.id)
    if doc.head is not None and doc.head not in seen:
        raise ValueError(f"the head {doc.head} is not one of the messages")


def _check_snapshots(doc: ConversationDoc) -> None:
    messages = {m.id for m in doc.messages}
    if (twice := _duplicate([s.id for s in doc.snapshots])) is not None:
        raise ValueError(f"snapshot {twice} is listed twice")
    if (twice := _duplicate([s.leaf for s in doc.snapshots])) is not None:
        raise ValueError(f"message {twice} is the leaf of two snapshots")
    for s in doc.snapshots:
        if s.leaf not in messages:
            raise ValueError(f"snapshot {s.id} ends at message {s.leaf}, which is not listed")
        if len(s.token_ids) != len(s.token_texts):
            raise ValueError(
                f"snapshot {s.id} has {len(s.token_ids)} token ids but {len(s.token_texts)} token texts"
            )
        for span in s.spans:
            if not span.start <= span.end <= len(s.token_ids):
                raise ValueError(
                    f"snapshot {s.id} has a span {span.start}–{span.end} outside its "
                    f"{len(s.token_ids)} tokens"
                )
            if span.message_id is not None and span.message_id not in messages:
                raise ValueError(
                    f"snapshot {s.id} names message {span.message_id}, which is not listed"
                )


def _check_explanations(doc: ConversationDoc) -> None:
    lengths = {s.id: len(s.token_ids) for s in doc.snapshots}
    if (twice := _duplicate([e.id for e in doc.explanations])) is not None:
        raise ValueError(f"explanation {twice} is listed twice")
    keys = [(e.snapshot, e.position, e.source_id, e.settings_key) for e in doc.explanations]
    if (key := _duplicate(keys)) is not None:
        raise ValueError(
            f"token {key[1]} of snapshot {key[0]} is explained twice with the same settings"
        )
    for e in doc.explanations:
        if e.snapshot not in lengths:
            raise ValueError(f"explanation {e.id} names snapshot {e.snapshot}, which is not listed")
        if e.position >= lengths[e.snapshot]:
            raise ValueError(
                f"explanation {e.id} is at token {e.position}, past the end of its snapshot "
                f"({lengths[e.snapshot]} tokens)"
            )
