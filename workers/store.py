"""What a job reads and the store it is handed: plain job values and the typed Store protocols.

Django-free. `workers/tasks.py` hands each job the Django implementation (nlaweb/jobs/django_store.py,
nlaweb/jobs/api_store.py); unit tests hand it tests/fakes.py's MemoryStore.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel


@dataclass(frozen=True)
class Turn:
    message_id: str
    role: str
    content: str


@dataclass(frozen=True)
class ReplyJob:
    conversation_id: str
    message_id: str
    source_id: str
    history: list[Turn]  # root → the message being answered
    #: How the message gets its text: "written"/"regenerated" (generated), "edited" (its `content`
    #: as the person wrote it, only tokenized), "continued" (generated after `content`).
    origin: str = "written"
    content: str = ""
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class JobRow:
    explanation_id: str
    conversation_id: str
    position: int
    template_end: int = 0  # positions before this are the template's preamble (no message's)


@dataclass(frozen=True)
class JobGroup:
    """The rows of one snapshot: one capture pass over its tokens."""

    token_ids: list[int]
    rows: list[JobRow]


@dataclass(frozen=True)
class ExplainJob:
    """Rows of one source and settings, from one or more snapshots, explained as one engine batch."""

    source_id: str
    settings: dict[str, Any]
    groups: list[JobGroup]

    @property
    def rows(self) -> list[JobRow]:
        return [row for group in self.groups for row in group.rows]

    @property
    def explanation_ids(self) -> list[str]:
        return [row.explanation_id for row in self.rows]


@dataclass(frozen=True)
class ApiJobInput:
    job_id: str
    kind: str
    source_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class TakenRow:
    """One claimed row as `group_rows` reads it."""

    explanation_id: str
    snapshot_id: str
    conversation_id: str
    token_ids: list[int]
    spans: list[dict[str, Any]]
    position: int


def group_rows(rows: list[TakenRow]) -> list[JobGroup]:
    """Rows grouped by snapshot (first-seen order), positions ascending within each."""
    by_snapshot: dict[str, list[TakenRow]] = {}
    for row in rows:
        by_snapshot.setdefault(row.snapshot_id, []).append(row)
    groups = []
    for members in by_snapshot.values():
        first = members[0]
        end = template_end(first.spans)
        job_rows = [
            JobRow(r.explanation_id, r.conversation_id, r.position, end)
            for r in sorted(members, key=lambda r: r.position)
        ]
        groups.append(JobGroup(list(first.token_ids), job_rows))
    return groups


def template_end(spans: list[dict[str, Any]]) -> int:
    """End of the leading span that belongs to no message (BOS, a default system prompt), else 0."""
    first = spans[0] if spans else None
    return int(first["end"]) if first and first["start"] == 0 and not first["message_id"] else 0


class SnapshotStore(Protocol):
    """Stores the token sequence of the path root → `leaf_id`."""

    def save_snapshot(
        self,
        leaf_id: str,
        source_id: str,
        token_ids: list[int],
        token_texts: list[str],
        spans: list[dict[str, Any]],
    ) -> None: ...


class Store(SnapshotStore, Protocol):
    """What a reply or explain job reads and writes (rows, frames)."""

    def reply_job(self, message_id: str) -> ReplyJob | None: ...
    def finish_reply(self, message_id: str, content: str, truncated: bool = False) -> None: ...
    def fail_reply(self, message_id: str, content: str, error: str) -> None: ...
    def explain_job(self, explanation_ids: list[str]) -> ExplainJob | None: ...
    def take_waiting(self, job: ExplainJob, limit: int) -> ExplainJob | None: ...
    def set_stage(self, explanation_ids: list[str], stage: str) -> None: ...
    def finish_explanation(self, explanation_id: str, fields: dict[str, Any]) -> None: ...
    def fail_explanations(self, explanation_ids: list[str], error: str) -> None: ...
    def publish(self, conversation_id: str, frame: BaseModel) -> None: ...
    def queue_moved(self, source_id: str) -> None: ...
    def job_finished(self, explanation_ids: list[str]) -> None: ...


class ApiStore(SnapshotStore, Protocol):
    """What an API job (tokenize, raw vectors) reads and writes."""

    def claim_api_job(self, job_id: str) -> ApiJobInput | None: ...
    def tokenize_input(self, leaf_id: str) -> list[Turn]: ...
    def finish_api_job(self, job_id: str, result: dict[str, Any]) -> None: ...
    def fail_api_job(self, job_id: str, error: str, error_code: str) -> None: ...
