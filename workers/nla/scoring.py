"""AR fidelity arithmetic (../shared/NLA.md §4, §8): pure functions of float32 tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workers.nla.calibration import (
    HIGH_BELOW,
    HIGH_SPECIFICITY,
    LOW_SPECIFICITY,
    MEDIUM_BELOW,
    Calibration,
    judge,
)
from workers.nla.inject import rescale
from workers.nla.types import Fidelity

__all__ = ["HIGH_BELOW", "HIGH_SPECIFICITY", "LOW_SPECIFICITY", "MEDIUM_BELOW", "confidence"]


def confidence(
    relative_mse: float | None,
    specificity: float | None = None,
    calibration: Calibration | None = None,
) -> str | None:
    """The pill (workers/nla/calibration.py `judge`): on the source's own scale when it carries a
    calibration, else Neuronpedia's (high < 0.3 ≤ medium < 0.5 ≤ low of relative MSE); capped by
    specificity: at most "medium" below 0.8, "low" below 0.5; None specificity caps nothing."""
    return judge(relative_mse, specificity, calibration).confidence


def fidelities(
    predicted: torch.Tensor,
    target: torch.Tensor,
    mse_scale: float | None,
    var: float | None,
    specificities: Sequence[float | None] | None = None,
    calibration: Calibration | None = None,
) -> list[Fidelity]:
    """One Fidelity per row of `[B, d]` predictions against `[B, d]` targets, both normalised to
    L2 norm `mse_scale` (None: raw) before `mse = mean((p̂ − ĝ)²)`; `specificities` (one per row,
    workers/nla/specificity.py) cap the confidence."""
    p, g = rescale(predicted, mse_scale), rescale(target, mse_scale)
    mse = ((p - g) ** 2).mean(dim=-1)
    cos = torch.nn.functional.cosine_similarity(predicted.float(), target.float(), dim=-1)
    specific = list(specificities) if specificities is not None else [None] * len(mse)
    return [
        _one(float(m), float(c), var, s, calibration)
        for m, c, s in zip(mse, cos, specific, strict=True)
    ]


def _one(
    mse: float,
    cosine: float,
    var: float | None,
    specificity: float | None,
    calibration: Calibration | None,
) -> Fidelity:
    relative = mse / var if var else None
    verdict = judge(relative, specificity, calibration)
    return Fidelity(
        mse=mse,
        cosine=cosine,
        fve=None if relative is None else 1.0 - relative,
        relative_mse=relative,
        confidence=verdict.confidence,
        specificity=specificity,
        calibration=verdict.place,
        confidence_note=verdict.note,
    )
