"""A store kept in memory and an engine without a model, for driving `workers/pipeline.py` in unit tests.

`MemoryStore` implements the `workers.store.Store` protocol over dicts and keeps every published frame
per conversation. It does not decide which rows a job takes: a job takes exactly the queued rows it
names, in the order named (grouped per snapshot by the real `workers.store.group_rows`). The claim
rules (batch-mates in turns over people, retried rows alone, give-ups) are
`ExplanationQuerySet.claim`'s, tested on PostgreSQL (tests/unit/test_claims.py, test_store.py).
`EchoEngine` answers with results that name the tokens and position they were asked for, so a result
stored on the wrong row or a frame sent to the wrong conversation shows in an assertion."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from workers.nla.types import (
    ChatTurn,
    ExplainProgress,
    Fidelity,
    GenerationSettings,
    MessageSpan,
    Reply,
    TokenExplanation,
    TokenizedConversation,
)
from workers.store import ExplainJob, ReplyJob, TakenRow, Turn, group_rows

_ids = itertools.count(1)


@dataclass
class MemorySnapshot:
    """The fields of chat.Snapshot that a job reads."""

    conversation_id: str
    token_ids: list[int]
    spans: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class MemoryRow:
    """An Explanation row: the fields a job reads, then what the job writes."""

    pk: str
    snapshot_id: str
    snapshot: MemorySnapshot
    position: int
    source_id: str
    settings: dict[str, Any]
    status: str = "queued"
    stage: str = "queued"
    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def taken(self) -> TakenRow:
        snapshot = self.snapshot
        return TakenRow(
            self.pk,
            self.snapshot_id,
            snapshot.conversation_id,
            snapshot.token_ids,
            snapshot.spans,
            self.position,
        )


@dataclass
class MemoryMessage:
    conversation_id: str
    source_id: str
    history: list[Turn]
    status: str = "generating"
    content: str = ""
    error: str = ""
    origin: str = "written"
    truncated: bool = False


class MemoryStore:
    """The worker's store over dicts; `frames[conversation_id]` lists what each conversation got."""

    def __init__(self) -> None:
        self.snapshots: dict[str, MemorySnapshot] = {}
        self.rows: dict[str, MemoryRow] = {}  # in creation order, as created_at orders them
        self.messages: dict[str, MemoryMessage] = {}
        self.saved_snapshots: dict[str, dict[str, Any]] = {}
        self.frames: dict[str, list[BaseModel]] = defaultdict(list)
        self.queue_moves: list[str] = []  # sources whose waiting rows were told their place
        self.finished_jobs: list[list[str]] = []

    # -- test setup ---------------------------------------------------------------------------
    def add_snapshot(
        self, conversation_id: str, token_ids: list[int], spans: list[dict[str, Any]] | None = None
    ) -> str:
        snapshot_id = f"snapshot-{next(_ids)}"
        self.snapshots[snapshot_id] = MemorySnapshot(conversation_id, token_ids, spans or [])
        return snapshot_id

    def queue(
        self,
        snapshot_id: str,
        position: int,
        source_id: str = "echo",
        settings: dict[str, Any] | None = None,
    ) -> str:
        pk = f"explanation-{next(_ids)}"
        self.rows[pk] = MemoryRow(
            pk, snapshot_id, self.snapshots[snapshot_id], position, source_id, settings or {}
        )
        return pk

    def add_reply(
        self,
        conversation_id: str,
        history: list[Turn],
        source_id: str = "echo",
        origin: str = "written",
        content: str = "",
    ) -> str:
        message_id = f"message-{next(_ids)}"
        self.messages[message_id] = MemoryMessage(
            conversation_id, source_id, history, content=content, origin=origin
        )
        return message_id

    # -- chat ---------------------------------------------------------------------------------
    def reply_job(self, message_id: str) -> ReplyJob | None:
        message = self.messages.get(message_id)
        if message is None or message.status != "generating":
            return None
        return ReplyJob(
            message.conversation_id,
            message_id,
            message.source_id,
            message.history,
            origin=message.origin,
            content=message.content,
        )

    def save_snapshot(
        self,
        leaf_id: str,
        source_id: str,
        token_ids: list[int],
        token_texts: list[str],
        spans: list[dict[str, Any]],
    ) -> None:
        self.saved_snapshots[leaf_id] = {
            "source_id": source_id,
            "token_ids": token_ids,
            "token_texts": token_texts,
            "spans": spans,
        }

    def queue_moved(self, source_id: str) -> None:
        self.queue_moves.append(source_id)

    def job_finished(self, explanation_ids: list[str]) -> None:
        self.finished_jobs.append(list(explanation_ids))

    def finish_reply(self, message_id: str, content: str, truncated: bool = False) -> None:
        message = self.messages[message_id]
        message.status, message.content, message.truncated = "done", content, truncated

    def fail_reply(self, message_id: str, content: str, error: str) -> None:
        message = self.messages[message_id]
        message.status, message.content, message.error = "failed", content, error

    # -- explanations -------------------------------------------------------------------------
    def explain_job(self, explanation_ids: list[str]) -> ExplainJob | None:
        """The named rows that are still queued, in the order named, all marked running."""
        taken = [self.rows[pk] for pk in explanation_ids if self.rows[pk].status == "queued"]
        if not taken:
            return None
        for row in taken:
            row.status, row.stage = "running", "loading"
        first = taken[0]
        return ExplainJob(first.source_id, first.settings, group_rows([r.taken() for r in taken]))

    def take_waiting(self, job: ExplainJob, limit: int) -> ExplainJob | None:
        """Up to `limit` queued rows of the job's source and settings, oldest first, marked running."""
        first = self.rows[job.explanation_ids[0]]
        taken = [
            row
            for row in self.rows.values()
            if row.status == "queued"
            and (row.source_id, row.settings) == (first.source_id, first.settings)
        ][:limit]
        if not taken:
            return None
        for row in taken:
            row.status, row.stage = "running", "loading"
        return ExplainJob(job.source_id, job.settings, group_rows([r.taken() for r in taken]))

    def set_stage(self, explanation_ids: list[str], stage: str) -> None:
        for pk in explanation_ids:
            self.rows[pk].stage = stage

    def finish_explanation(self, explanation_id: str, fields: dict[str, Any]) -> None:
        row = self.rows[explanation_id]
        row.status, row.stage, row.fields = "done", "done", fields

    def fail_explanations(self, explanation_ids: list[str], error: str) -> None:
        for pk in explanation_ids:
            row = self.rows[pk]
            row.status, row.stage, row.error = "failed", "failed", error

    # -- frames -------------------------------------------------------------------------------
    def publish(self, conversation_id: str, frame: BaseModel) -> None:
        self.frames[conversation_id].append(frame)


def echo_text(token_ids: Sequence[int], position: int) -> str:
    """What EchoEngine explains for `position` of `token_ids`: it names both."""
    return f"token {token_ids[position]} at {position} of the sequence from {token_ids[0]}"


class EchoEngine:
    """The engine's explain and reply interface without a model. Each result names the tokens and
    position it was asked for; texts stream in reverse row order, so a frame whose row index is
    mixed up reaches the wrong explanation."""

    def __init__(self, fails: Callable[[], None] | None = None) -> None:
        self.fails = fails
        self.requests: list[list[tuple[list[int], list[int]]]] = []
        self.replies = 0  # how many replies it generated

    def can_refill(self) -> bool:
        return False  # fixed batches: the pipeline's path for a vLLM or sliding-window AV

    def explain_batch(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        settings: GenerationSettings,
        progress: ExplainProgress,
    ) -> list[list[TokenExplanation]]:
        self.requests.append([(list(ids), list(ps)) for ids, ps in requests])
        flat = [(ids, p) for ids, positions in requests for p in positions]
        progress.stage("capturing", 0, len(flat))
        progress.stage("verbalizing", 0, len(flat))
        if self.fails is not None:
            self.fails()
        for index in reversed(range(len(flat))):
            ids, p = flat[index]
            progress.text(index, f"<explanation>{echo_text(ids, p)}")
        progress.stage("scoring", 0, len(flat))
        return [[self._result(ids, p) for p in positions] for ids, positions in requests]

    @staticmethod
    def _result(token_ids: Sequence[int], position: int) -> TokenExplanation:
        text = echo_text(token_ids, position)
        mse = token_ids[0] / 1000 + position / 100  # tells every (sequence, position) apart
        return TokenExplanation(
            position=position,
            token_id=token_ids[position],
            token_text=f"t{token_ids[position]}",
            text=text,
            raw_text=f"<explanation>{text}</explanation>",
            truncated=False,
            fidelity=Fidelity(mse, 1 - mse, None, None, None),
            l2_norm=float(token_ids[position]),
        )

    def tokenize(
        self, turns: Sequence[ChatTurn], *, add_generation_prompt: bool = False
    ) -> TokenizedConversation:
        """One token per character of each turn (its code point), spans per turn."""
        ids: list[int] = []
        spans = []
        for index, turn in enumerate(turns):
            spans.append(MessageSpan(index, turn.role, len(ids), len(ids) + len(turn.content)))
            ids.extend(ord(c) for c in turn.content)
        return TokenizedConversation(ids, [chr(i) for i in ids], spans)

    def reply(
        self,
        turns: Sequence[ChatTurn],
        settings: GenerationSettings,
        on_text: Any,
        prefix: str = "",
    ) -> Reply:
        """Answers `turns[-1]` word by word: "you said: <its words>" (after `prefix`, if any)."""
        self.replies += 1
        text = (prefix + " " if prefix else "") + "you said:"
        on_text(text)
        for word in turns[-1].content.split():
            text += " " + word
            on_text(text)
        return Reply(text, truncated=False)
