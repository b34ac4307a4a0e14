"""The API's vector jobs: explain raw vectors (e.g. SAE decoder rows) through the AV with the AR's score
of each, and score an autointerp label against a vector (workers/nla/autointerp.py).

Inputs and results travel in the job's ApiJob row (the embedded mode has no Celery result backend,
and a row outlives a lost message). Django-free: rows go through an ApiStore."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from workers.nla.autointerp import autointerp_scores, last_paragraph
from workers.nla.types import Engine
from workers.pipeline import EngineFor, readable, registry_engine
from workers.store import ApiStore
from workers.tokenize import error_code

log = logging.getLogger(__name__)

KIND_EXPLAIN_VECTORS = "explain_vectors"
KIND_SCORE = "score"

#: Sentence embeddings of texts (`workers.nla.embedder.embed` in a worker).
Embed = Callable[[Sequence[str]], list[list[float]]]


def default_embed(texts: Sequence[str]) -> list[list[float]]:
    from workers.nla.embedder import embed

    return embed(texts)


def _settings(payload: dict[str, Any]) -> Any:
    from workers.nla.types import GenerationSettings

    return GenerationSettings(**payload.get("settings", {}))


def _explained(result: Any) -> dict[str, Any]:
    f = result.fidelity
    return {
        "description": result.verbalized.text,
        "raw_text": result.verbalized.raw_text,
        "truncated": result.verbalized.truncated,
        "mse": f.mse,
        "cosine_similarity": f.cosine,
        "fve": f.fve,
        "relative_mse": f.relative_mse,
        "confidence": f.confidence,
        "specificity": f.specificity,
        "calibration": f.calibration,
        "confidence_note": f.confidence_note,
        "l2_norm": result.l2_norm,
    }


def explain_vectors(engine: Engine, payload: dict[str, Any]) -> dict[str, Any]:
    """`{"results": [...]}`: the AV's text and the AR's score of each vector, in order."""
    from workers.nla.types import NoProgress

    results = engine.explain_vectors(payload["vectors"], _settings(payload), NoProgress())
    return {"results": [_explained(r) for r in results]}


def score_label(engine: Any, embed: Embed, payload: dict[str, Any]) -> dict[str, Any]:
    # `engine: Any`: it also reads the engine's reconstructor (torch), outside the Engine protocol.
    """The three autointerp scores of `payload["label"]` against `payload["vector"]`, with the AV's
    text for the vector they were computed from."""
    import torch

    from workers.nla.types import NoProgress

    vector, label = payload["vector"], str(payload["label"])
    explained = engine.explain_vectors([vector], _settings(payload), NoProgress())[0]
    reconstructed = engine.reconstructor.predict([label])[0].float().cpu()
    text = explained.verbalized.text
    last = last_paragraph(text)
    label_e, text_e, last_e = embed([label, text, last])
    scores = autointerp_scores(
        reconstructed.tolist(), torch.as_tensor(vector).tolist(), label_e, text_e, last_e
    )
    return {**asdict(scores), "explanation": text, "last_paragraph": last}


def run_vectors(
    store: ApiStore,
    job_id: str,
    engine_for: EngineFor = registry_engine,
    embed: Embed = default_embed,
) -> None:
    """Run one explain-vectors or score job; its row ends done with the result, or failed."""
    job = store.claim_api_job(job_id)
    if job is None:
        return
    try:
        engine = engine_for(job.source_id)
        if job.kind == KIND_SCORE:
            result = score_label(engine, embed, job.payload)
        else:
            result = explain_vectors(engine, job.payload)
        store.finish_api_job(job_id, result)
    except Exception as error:
        log.exception("vector job %s failed", job_id)
        store.fail_api_job(job_id, readable(error, "explaining these vectors"), error_code(error))
