"""POST /api/v1/explain: the tokens of an input explained through the same door as a click
(`request_explanations`, one Explanation row per token, source and settings, the worker's shared
batches), so an API request and a click on the same token share one stored row."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings

from nlaweb.api.catalog import SourceInfo
from nlaweb.api.http_errors import BadRequest
from nlaweb.api.inputs import Prepared, Turn, prepare_cached, prepare_input, snapshot_of
from nlaweb.api.resolve import resolve_source
from nlaweb.api.schemas import ExplainRequest
from nlaweb.api.waiting import db_async, wait_for
from nlaweb.chat.models import Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected, ExplainSettings, request_explanations
from workers.contracts import conversation_group
from workers.nla.types import MAX_POSITIONS_PER_REQUEST

FINAL_FRAMES = {"explanation.done", "explanation.failed"}


@dataclass(frozen=True)
class Asked:
    """The rows of one explain request, in the order of its positions."""

    source: SourceInfo
    snapshot: Snapshot
    positions: list[int]
    rows: dict[int, Explanation]
    cached: frozenset[int]  # positions whose row was done before this request

    @property
    def conversation_id(self) -> UUID:
        return self.snapshot.conversation_id

    @property
    def pending_ids(self) -> list[UUID]:
        return [r.pk for r in self.rows.values() if not r.is_finished]


def resolve_positions(positions: Sequence[int], length: int) -> list[int]:
    """Negative positions counted from the end; each inside [0, length) and asked once."""
    resolved = [p + length if p < 0 else p for p in positions]
    outside = [asked for asked, p in zip(positions, resolved, strict=True) if not 0 <= p < length]
    if outside:
        raise BadRequest(
            f"Position {outside[0]} is outside this input, which has {length} tokens "
            f"(positions 0 to {length - 1}, or -{length} to -1 from the end)."
        )
    repeated = sorted(p for p, n in Counter(resolved).items() if n > 1)
    if repeated:
        raise BadRequest(
            f"Ask for each token once; position {repeated[0]} is asked more than once."
        )
    return resolved


def request_rows(
    snapshot: Snapshot, positions: list[int], explain_settings: ExplainSettings
) -> tuple[dict[int, Explanation], frozenset[int]]:
    """Stored rows as they are; the others (at most 16) through request_explanations."""
    done = {
        e.position: e
        for e in Explanation.objects.filter(
            snapshot=snapshot,
            source_id=snapshot.source_id,
            settings_key=explain_settings.key(),
            position__in=positions,
            status=Explanation.Status.DONE,
        )
    }
    new = [p for p in positions if p not in done]
    if len(new) > MAX_POSITIONS_PER_REQUEST:
        raise BadRequest(
            f"At most {MAX_POSITIONS_PER_REQUEST} new positions per request; {len(new)} were asked."
        )
    try:
        asked = request_explanations(snapshot, new, explain_settings) if new else []
    except ExplainRejected as rejected:
        raise BadRequest(str(rejected)) from None
    return {**done, **{e.position: e for e in asked}}, frozenset(done)


def _prepare(user: Any, request: ExplainRequest, source: SourceInfo) -> Prepared:
    if request.cacheId is not None:
        return prepare_cached(user, request.cacheId, request.nlaSourceId)
    if request.text is not None:
        return prepare_input(user, source.id, [Turn("user", request.text)], raw=True)
    turns = [Turn(m.role, m.content) for m in request.messages or []]
    return prepare_input(user, source.id, turns, raw=False)


async def ask(user: Any, request: ExplainRequest) -> Asked:
    """Validate, store or find the input, wait for its tokens, and request the rows."""
    source = await db_async(resolve_source)(request.nlaSourceId, request.modelId)
    prepared = await db_async(_prepare)(user, request, source)
    snapshot = await snapshot_of(prepared)
    if snapshot.source_id != source.id:  # a cacheId's conversation keeps its own source
        source = await db_async(resolve_source)(snapshot.source_id)
    positions = resolve_positions(request.positions, len(snapshot.token_ids))
    explain_settings = ExplainSettings(request.temperature, request.max_new_tokens)
    rows, cached = await db_async(request_rows)(snapshot, positions, explain_settings)
    return Asked(source, snapshot, positions, rows, cached)


@db_async
def refreshed(asked: Asked) -> Asked:
    """The same request with its rows read again."""
    fresh = {
        e.pk: e for e in Explanation.objects.filter(pk__in=[r.pk for r in asked.rows.values()])
    }
    rows = {p: fresh.get(r.pk, r) for p, r in asked.rows.items()}
    return Asked(asked.source, asked.snapshot, asked.positions, rows, asked.cached)


async def finished(asked: Asked) -> Asked:
    """The request once every row is done or failed, or as it stands after API_WAIT_SECONDS."""

    async def check() -> Asked | None:
        fresh = await refreshed(asked)
        return None if fresh.pending_ids else fresh

    done = await wait_for(
        conversation_group(str(asked.conversation_id)),
        check,
        settings.API_WAIT_SECONDS,
        wakes=lambda event: event.get("type") in FINAL_FRAMES,
    )
    return done or await refreshed(asked)


def result(asked: Asked, position: int) -> dict[str, Any]:
    """One position's entry of `results`, from its stored row."""
    row, snapshot = asked.rows[position], asked.snapshot
    done = row.status == Explanation.Status.DONE
    return {
        "position": position,
        "token": snapshot.token_texts[position],
        "token_id": snapshot.token_ids[position],
        "description": row.text if done else None,
        "paragraphs": row.paragraphs if done else [],
        "mse": row.mse if done else None,
        "cosine_similarity": row.cosine if done else None,
        "fve": row.fve if done else None,
        "relative_mse": row.relative_mse if done else None,
        "confidence": (row.confidence or None) if done else None,
        "specificity": row.specificity if done else None,
        "calibration": (row.calibration or None) if done else None,
        "confidence_note": (row.confidence_note or None) if done else None,
        "l2_norm": row.l2_norm if done else None,
        "cached": position in asked.cached,
        "status": row.status,
        "error": row.error or None,
        "warnings": list(row.warnings or []),
        "explanationId": row.pk,
    }


def answer(asked: Asked) -> dict[str, Any]:
    return {
        "results": [result(asked, p) for p in asked.positions],
        "layer_index": asked.source.layer,
        "prompt_length": len(asked.snapshot.token_ids),
        "cacheId": asked.conversation_id,
        "nlaSourceId": asked.snapshot.source_id,
    }
