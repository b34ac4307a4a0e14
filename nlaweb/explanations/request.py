"""Ask for the explanation of one token: a stored one is returned at once, else a queued row is saved
and a job enqueued after commit. A failed one is retried on the next ask."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from nlaweb.chat.models import Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.jobs import enqueue
from workers.contracts import TASK_EXPLAIN

DEFAULT_TEMPERATURE = 0.0


class ExplainRejected(Exception):
    """The request cannot be served; the message is for the user."""


@dataclass(frozen=True)
class ExplainSettings:
    temperature: float = DEFAULT_TEMPERATURE
    max_new_tokens: int | None = None
    seed: int = 0

    def key(self) -> str:
        """Same canonical form as workers.nla.types.GenerationSettings.key()."""
        return json.dumps(
            {"t": self.temperature, "n": self.max_new_tokens, "s": self.seed}, sort_keys=True
        )

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


def request_explanation(
    snapshot: Snapshot, position: int, settings: ExplainSettings | None = None
) -> Explanation:
    settings = settings or ExplainSettings()
    length = len(snapshot.token_ids)
    if not 0 <= position < length:
        raise ExplainRejected(
            f"Token position {position} is outside this conversation, which has {length} tokens "
            f"(positions 0 to {length - 1})."
        )
    key = dict(
        snapshot=snapshot,
        position=position,
        source_id=snapshot.source_id,
        settings_key=settings.key(),
    )
    with transaction.atomic():
        explanation = Explanation.objects.select_for_update().filter(**key).first()
        if explanation is None:
            explanation = _create(key, settings)
        elif explanation.status == Explanation.Status.FAILED:
            _reset(explanation)
        else:
            return explanation
        enqueue(TASK_EXPLAIN, [str(explanation.id)])
    return explanation


def _create(key: dict[str, object], settings: ExplainSettings) -> Explanation:
    try:
        with transaction.atomic():
            return Explanation.objects.create(**key, settings=settings.as_dict())
    except IntegrityError:  # a concurrent click created it first
        return Explanation.objects.get(**key)


def _reset(explanation: Explanation) -> None:
    explanation.status = Explanation.Status.QUEUED
    explanation.stage = "queued"
    explanation.error = ""
    explanation.text = explanation.raw_text = ""
    explanation.save(update_fields=["status", "stage", "error", "text", "raw_text"])
