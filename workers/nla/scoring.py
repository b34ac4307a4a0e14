"""AR fidelity arithmetic (../shared/NLA.md §4): pure functions of float32 tensors."""

from __future__ import annotations

import torch

from workers.nla.inject import rescale
from workers.nla.types import Fidelity

HIGH_BELOW = 0.3
MEDIUM_BELOW = 0.5


def confidence(relative_mse: float | None) -> str | None:
    """Neuronpedia's pill: high < 0.3 ≤ medium < 0.5 ≤ low."""
    if relative_mse is None:
        return None
    if relative_mse < HIGH_BELOW:
        return "high"
    return "medium" if relative_mse < MEDIUM_BELOW else "low"


def fidelities(
    predicted: torch.Tensor, target: torch.Tensor, mse_scale: float | None, var: float | None
) -> list[Fidelity]:
    """One Fidelity per row of `[B, d]` predictions against `[B, d]` targets, both normalised to
    L2 norm `mse_scale` (None: raw) before `mse = mean((p̂ − ĝ)²)`."""
    p, g = rescale(predicted, mse_scale), rescale(target, mse_scale)
    mse = ((p - g) ** 2).mean(dim=-1)
    cos = torch.nn.functional.cosine_similarity(predicted.float(), target.float(), dim=-1)
    return [_one(float(m), float(c), var) for m, c in zip(mse, cos, strict=True)]


def _one(mse: float, cosine: float, var: float | None) -> Fidelity:
    relative = mse / var if var else None
    return Fidelity(
        mse=mse,
        cosine=cosine,
        fve=None if relative is None else 1.0 - relative,
        relative_mse=relative,
        confidence=confidence(relative),
    )
