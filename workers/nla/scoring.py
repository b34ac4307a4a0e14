"""AR fidelity arithmetic (../shared/NLA.md §4, §8): pure functions of float32 tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workers.nla.inject import rescale
from workers.nla.types import Fidelity

HIGH_BELOW = 0.3
MEDIUM_BELOW = 0.5
#: Specificity below this caps the pill at "medium", below LOW_SPECIFICITY at "low": such a text
#: rebuilds its activation no better than a fifth (a half) of unrelated explanations do.
HIGH_SPECIFICITY = 0.8
LOW_SPECIFICITY = 0.5
_ORDER = ("low", "medium", "high")


def confidence(relative_mse: float | None, specificity: float | None = None) -> str | None:
    """Neuronpedia's pill (high < 0.3 ≤ medium < 0.5 ≤ low of relative MSE), capped by
    specificity: at most "medium" below 0.8, "low" below 0.5; None specificity caps nothing."""
    if relative_mse is None:
        return None
    pill = (
        "high" if relative_mse < HIGH_BELOW else "medium" if relative_mse < MEDIUM_BELOW else "low"
    )
    if specificity is None or specificity >= HIGH_SPECIFICITY:
        return pill
    cap = "medium" if specificity >= LOW_SPECIFICITY else "low"
    return min(pill, cap, key=_ORDER.index)


def fidelities(
    predicted: torch.Tensor,
    target: torch.Tensor,
    mse_scale: float | None,
    var: float | None,
    specificities: Sequence[float | None] | None = None,
) -> list[Fidelity]:
    """One Fidelity per row of `[B, d]` predictions against `[B, d]` targets, both normalised to
    L2 norm `mse_scale` (None: raw) before `mse = mean((p̂ − ĝ)²)`; `specificities` (one per row,
    workers/nla/specificity.py) cap the confidence."""
    p, g = rescale(predicted, mse_scale), rescale(target, mse_scale)
    mse = ((p - g) ** 2).mean(dim=-1)
    cos = torch.nn.functional.cosine_similarity(predicted.float(), target.float(), dim=-1)
    specific = list(specificities) if specificities is not None else [None] * len(mse)
    return [_one(float(m), float(c), var, s) for m, c, s in zip(mse, cos, specific, strict=True)]


def _one(mse: float, cosine: float, var: float | None, specificity: float | None) -> Fidelity:
    relative = mse / var if var else None
    return Fidelity(
        mse=mse,
        cosine=cosine,
        fve=None if relative is None else 1.0 - relative,
        relative_mse=relative,
        confidence=confidence(relative, specificity),
        specificity=specificity,
    )
