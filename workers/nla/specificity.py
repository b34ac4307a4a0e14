"""Specificity (../shared/NLA.md §8): how an explanation's reconstruction of its activation ranks
against the reconstructions of other explanations of the same source. Pure functions of tensors.

A low relative MSE means little where the activation sits near the mean (template tokens): almost
any text rebuilds it. Specificity asks whether *this* text rebuilds *this* activation better than
other texts do: for activation a, matched AR prediction p and pool predictions p_i, all normalised
to L2 norm mse_scale, it is the fraction of i with mse(p_i, a) > mse(p, a). Ties count half, so an
explanation whose prediction fits any activation as well as the others do ranks near 0.5, an exact
one 1.0, and a pool of identical predictions gives 0.5 rather than 0 or 1.
"""

from __future__ import annotations

import torch

from workers.nla.inject import rescale

#: Errors closer than this fraction of the vectors' squared norms (per dimension) are a tie: the
#: expanded ‖x‖² − 2x·a + ‖a‖² loses about that much to float32 rounding.
TIE_TOLERANCE = 1e-5


def squared_errors(rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`[N]` mean((row − target)²) of `[N, d]` rows against a `[d]` target, by one matrix product."""
    d = target.shape[-1]
    return (rows.pow(2).sum(-1) - 2.0 * (rows @ target) + target.pow(2).sum()) / d


def specificity(
    predicted: torch.Tensor, target: torch.Tensor, pool: torch.Tensor, mse_scale: float | None
) -> float | None:
    """Fraction of the `[N, d]` pool whose error against the `[d]` target exceeds the `[d]`
    prediction's (ties count half), all normalised to `mse_scale` (None: raw); None if N = 0."""
    if pool.shape[0] == 0:
        return None
    rows = rescale(torch.cat([predicted[None], pool]).float(), mse_scale)
    goal = rescale(target.float(), mse_scale)
    errors = squared_errors(rows, goal)
    own, others = errors[0], errors[1:]
    scale = (rows.pow(2).sum(-1).max() + goal.pow(2).sum()) / goal.shape[-1]
    tied = (others - own).abs() <= TIE_TOLERANCE * scale
    worse = (others > own) & ~tied
    return (float(worse.sum()) + 0.5 * float(tied.sum())) / pool.shape[0]
