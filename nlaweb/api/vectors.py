"""POST /api/v1/explain-vector and /api/v1/score: raw vectors through the AV and AR, and autointerp
scores of a label. The vectors travel to the worker in an ApiJob row and the results come back in
the same row (the embedded mode has no Celery result backend; a row also survives a lost message)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from nlaweb.api.catalog import SourceInfo
from nlaweb.api.http_errors import BadRequest, Unavailable
from nlaweb.api.inputs import finished_job
from nlaweb.api.models import ApiJob
from nlaweb.api.resolve import resolve_source
from nlaweb.api.schemas import ExplainVectorRequest, ScoreRequest
from nlaweb.api.waiting import db_async
from nlaweb.jobs.broker import enqueue
from workers.contracts import TASK_VECTORS


def check_width(source: SourceInfo, vectors: list[list[float]]) -> None:
    """Each vector has the source's d_model numbers (BadRequest naming d_model otherwise)."""
    if source.d_model is None:
        raise Unavailable(
            f"The width (d_model) of the NLA source '{source.id}' cannot be read from its files; "
            "ask an administrator to check its checkpoints."
        )
    for index, vector in enumerate(vectors):
        if len(vector) != source.d_model:
            raise BadRequest(
                f"Each vector needs d_model = {source.d_model} numbers for the NLA source "
                f"'{source.id}'; vector {index} has {len(vector)}."
            )


def _settings(temperature: float, max_new_tokens: int | None) -> dict[str, Any]:
    return {"temperature": temperature, "max_new_tokens": max_new_tokens, "seed": 0}


@transaction.atomic
def _queue(user: Any, kind: str, source: SourceInfo, payload: dict[str, Any]) -> ApiJob:
    job = ApiJob.objects.create(owner=user, kind=kind, source_id=source.id, payload=payload)
    enqueue(TASK_VECTORS, str(job.pk))
    return job


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


async def explain_vectors(user: Any, request: ExplainVectorRequest) -> dict[str, Any]:
    source = await db_async(resolve_source)(request.nlaSourceId)
    check_width(source, request.vectors)
    payload = {
        "vectors": request.vectors,
        "settings": _settings(request.temperature, request.max_new_tokens),
    }
    job = await db_async(_queue)(user, ApiJob.Kind.EXPLAIN_VECTORS, source, payload)
    done = await finished_job(job.pk, "explaining these vectors")
    results = (done.result or {}).get("results", [])
    return {
        "results": [
            {"index": i, **r, "paragraphs": _paragraphs(r["description"])}
            for i, r in enumerate(results)
        ],
        "layer_index": source.layer,
        "d_model": source.d_model,
        "nlaSourceId": source.id,
    }


async def score(user: Any, request: ScoreRequest) -> dict[str, Any]:
    source = await db_async(resolve_source)(request.nlaSourceId)
    check_width(source, [request.vector])
    payload = {
        "vector": request.vector,
        "label": request.label,
        "settings": _settings(request.temperature, request.max_new_tokens),
    }
    job = await db_async(_queue)(user, ApiJob.Kind.SCORE, source, payload)
    done = await finished_job(job.pk, "scoring this label")
    result = done.result or {}
    keys = ("nla_reconstructor", "nla_verbalizer", "nla_verbalizer_last")
    return {
        "scores": {k: result[k] for k in keys},
        "explanation": result["explanation"],
        "last_paragraph": result["last_paragraph"],
        "label": request.label,
        "nlaSourceId": source.id,
    }
