"""What crosses the web/worker boundary: task names, and the typed frames the worker publishes to a
conversation's channel-layer group and the consumer forwards to the browser unchanged.

No torch here: the web process imports this module. A contract test pins each frame's keys.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

TASK_REPLY = "workers.reply"
TASK_EXPLAIN = "workers.explain"
TASK_TOKENIZE = "workers.tokenize"  # an API job: store the snapshot of a conversation or a raw text
TASK_VECTORS = "workers.vectors"  # an API job: explain raw vectors, or score a label against one
GPU_QUEUE = "gpu"

#: The stages an explanation moves through, in order; the panel shows them as a progress list.
STAGES: tuple[str, ...] = ("queued", "loading", "capturing", "verbalizing", "scoring", "done")


def conversation_group(conversation_id: str) -> str:
    """The channel-layer group of one conversation (ASCII, < 100 chars)."""
    return f"conversation.{conversation_id.replace('-', '')}"


def api_job_group(job_id: str) -> str:
    """The channel-layer group where the worker announces that one API job row has finished."""
    return f"apijob.{job_id.replace('-', '')}"


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatDelta(_Frame):
    type: Literal["chat.delta"] = "chat.delta"
    message_id: str
    text: str  # the whole reply so far, so a dropped frame loses nothing


class ChatDone(_Frame):
    type: Literal["chat.done"] = "chat.done"
    message_id: str


class ChatFailed(_Frame):
    type: Literal["chat.failed"] = "chat.failed"
    message_id: str
    error: str


class ExplanationProgress(_Frame):
    type: Literal["explanation.progress"] = "explanation.progress"
    explanation_id: str
    stage: str
    done: int
    total: int


class ExplanationText(_Frame):
    type: Literal["explanation.text"] = "explanation.text"
    explanation_id: str
    text: str  # the AV's text so far


class ExplanationDone(_Frame):
    type: Literal["explanation.done"] = "explanation.done"
    explanation_id: str
    text: str
    mse: float
    cosine: float
    fve: float | None
    relative_mse: float | None
    confidence: str | None
    specificity: float | None  # fraction of the source's reference pool rebuilt worse (ties half)


def ordinal(place: int) -> str:
    """1 → "1st", 2 → "2nd", 11 → "11th", 23 → "23rd"."""
    suffix = "th" if 10 <= place % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(place % 10, "th")
    return f"{place}{suffix}"


def in_line(place: int) -> str:
    """What the panel says of a queued row's place: "2nd in line" (the page renders it as is)."""
    return f"{ordinal(place)} in line"


class ExplanationQueued(_Frame):
    type: Literal["explanation.queued"] = "explanation.queued"
    explanation_id: str
    place: int  # 1-based place among its source's queued rows, in the order workers take them
    line: str  # `in_line(place)`, as the panel shows it


class RunProgress(_Frame):
    type: Literal["run.progress"] = "run.progress"
    run_id: str
    message_id: str
    done: int
    total: int


class ExplanationFailed(_Frame):
    type: Literal["explanation.failed"] = "explanation.failed"
    explanation_id: str
    error: str


Frame = Annotated[
    ChatDelta
    | ChatDone
    | ChatFailed
    | ExplanationProgress
    | ExplanationText
    | ExplanationDone
    | ExplanationFailed
    | ExplanationQueued
    | RunProgress,
    Field(discriminator="type"),
]
FRAME_ADAPTER: TypeAdapter[Frame] = TypeAdapter(Frame)
FRAME_TYPES: tuple[str, ...] = (
    "chat.delta",
    "chat.done",
    "chat.failed",
    "explanation.progress",
    "explanation.text",
    "explanation.done",
    "explanation.failed",
    "explanation.queued",
    "run.progress",
)


class ApiJobFinished(_Frame):
    """Sent to `api_job_group(job_id)` when an API job row is done or failed: a hint, the row is the
    truth. Not a browser frame (the conversation consumer never sees it)."""

    type: Literal["apijob.finished"] = "apijob.finished"
    job_id: str
    status: Literal["done", "failed"]
