"""GET /api/v1/sources/{id}/latents/{index}: one latent of a source's SAE for scripts and notebooks:
its decoder row at the norm the source's verbalizer expects (ready for /explain-vector and /score),
its stored top contexts and, when the page has explained it, that explanation."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router
from pydantic import BaseModel

from nlaweb.api.http_errors import BadRequest, NotFound
from nlaweb.api.schemas import ErrorOut
from nlaweb.latents import batches as explain
from nlaweb.latents.attached import source_sae
from workers.nla.sae import SaeRefused

router = Router(tags=["latents"])


class LatentOut(BaseModel):
    nlaSourceId: str
    index: int
    d_sae: int
    vector: list[float]
    norm: float
    norm_reason: str
    density: float | None
    contexts: list[dict[str, Any]]
    explanation: dict[str, Any] | None


@router.get(
    "/sources/{source_id}/latents/{index}",
    response={200: LatentOut, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut},
    summary="A latent of a source's SAE",
)
def latent(request: HttpRequest, source_id: str, index: int) -> dict[str, Any]:
    source = source_sae(source_id)
    if source is None:
        raise NotFound(f"There is no NLA source '{source_id}'.")
    if source.sae is None:
        raise NotFound(source.refusal)
    try:
        vector = explain.vector(source, index)
    except SaeRefused as exc:
        raise BadRequest(str(exc)) from exc
    stored = source.sae.contexts().get(str(index), {})
    rows = explain.rows_of(source_id, [index])
    done = rows[0] if rows and rows[0].status == "done" else None
    return {
        "nlaSourceId": source_id,
        "index": index,
        "d_sae": source.d_sae,
        "vector": vector,
        "norm": source.scale,
        "norm_reason": source.scale_reason,
        "density": stored.get("density"),
        "contexts": stored.get("contexts", []),
        "explanation": None
        if done is None
        else {"description": done.description, "relative_mse": done.relative_mse, "fve": done.fve},
    }
