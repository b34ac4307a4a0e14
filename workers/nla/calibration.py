"""The confidence pill on the source's own scale (docs/confidence.md): pure functions, no torch.

A source's calibration is two figures of its reconstructor: the median relative MSE of matched
explanations (an explanation scored against its own activation) and of shuffled ones (scored against
another activation). A relative MSE is placed between them; the pill combines that place with
specificity, and where the two point different ways a sentence says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Where a relative MSE falls on the source's scale.
AS_MATCHED = "matched"  # at or below the matched median: as good as a typical matching explanation
BETWEEN = "between"  # between the two medians
AS_SHUFFLED = "shuffled"  # at or above the shuffled median: no better than a text of another token
PLACE_WORDS = {
    AS_MATCHED: "as close as a typical matching explanation",
    BETWEEN: "between a typical matching and a shuffled explanation",
    AS_SHUFFLED: "no closer than a shuffled explanation",
}
#: Neuronpedia's fixed thresholds of relative MSE, used when a source carries no calibration.
HIGH_BELOW = 0.3
MEDIUM_BELOW = 0.5
#: Specificity below this caps the pill at "medium", below LOW_SPECIFICITY at "low".
HIGH_SPECIFICITY = 0.8
LOW_SPECIFICITY = 0.5
_ORDER = ("low", "medium", "high")


@dataclass(frozen=True)
class Calibration:
    """Median relative MSE of matched and of shuffled explanations of one source."""

    matched: float
    shuffled: float
    basis: str = ""  # where the figures come from ("demo build, held-out pairs", a paper's table)

    @property
    def separates(self) -> bool:
        """Matched explanations rebuild their activations better than shuffled ones do."""
        return self.matched < self.shuffled


def calibration_from(block: dict[str, Any] | None) -> Calibration | None:
    """`{matched_median, shuffled_median, basis}` (a sidecar's `nlaweb.calibration`, a source's
    figures) as a Calibration; None when either figure is missing or not a number."""
    if not block:
        return None
    matched: Any = block.get("matched_median")
    shuffled: Any = block.get("shuffled_median")
    if not (_number(matched) and _number(shuffled)):
        return None
    return Calibration(float(matched), float(shuffled), str(block.get("basis") or ""))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def place(relative_mse: float, calibration: Calibration) -> str:
    """AS_MATCHED, BETWEEN or AS_SHUFFLED: where `relative_mse` falls between the two medians."""
    if relative_mse <= calibration.matched:
        return AS_MATCHED
    if relative_mse >= calibration.shuffled:
        return AS_SHUFFLED
    return BETWEEN


def _from_place(relative_mse: float, calibration: Calibration) -> str:
    """The uncapped pill: high at the matched median or better, medium in the half of the way
    towards the shuffled median nearer the matched one, low beyond."""
    where = place(relative_mse, calibration)
    if where == AS_MATCHED:
        return "high"
    if where == AS_SHUFFLED:
        return "low"
    halfway = (calibration.matched + calibration.shuffled) / 2
    return "medium" if relative_mse < halfway else "low"


def _fixed(relative_mse: float) -> str:
    return (
        "high" if relative_mse < HIGH_BELOW else "medium" if relative_mse < MEDIUM_BELOW else "low"
    )


def _cap(pill: str, specificity: float | None) -> str:
    if specificity is None or specificity >= HIGH_SPECIFICITY:
        return pill
    cap = "medium" if specificity >= LOW_SPECIFICITY else "low"
    return min(pill, cap, key=_ORDER.index)


@dataclass(frozen=True)
class Verdict:
    """The pill, where the score falls on the source's scale, and why pill and specificity differ."""

    confidence: str | None  # "high" | "medium" | "low"; None without a relative MSE
    place: str | None  # AS_MATCHED | BETWEEN | AS_SHUFFLED; None without a calibration
    note: str  # "" when pill and specificity agree


def judge(
    relative_mse: float | None, specificity: float | None, calibration: Calibration | None
) -> Verdict:
    """The confidence of one explanation: placed on `calibration` when the source has one (else
    Neuronpedia's fixed thresholds), capped by specificity, with the sentence a reader needs
    where the pill and the specificity point different ways."""
    if relative_mse is None:
        return Verdict(None, None, "")
    if calibration is None:
        pill = _cap(_fixed(relative_mse), specificity)
        return Verdict(pill, None, _note(pill, _fixed(relative_mse), specificity, None))
    if not calibration.separates:
        note = (
            f"This source's reconstructor does not tell matching from shuffled explanations "
            f"(median relative MSE {calibration.matched:.2f} vs {calibration.shuffled:.2f}), "
            "so its scores say nothing about this text."
        )
        return Verdict("low", place(relative_mse, calibration), note)
    where = place(relative_mse, calibration)
    base = _from_place(relative_mse, calibration)
    pill = _cap(base, specificity)
    return Verdict(pill, where, _note(pill, base, specificity, calibration))


def _note(pill: str, base: str, specificity: float | None, calibration: Calibration | None) -> str:
    if specificity is None:
        return ""
    if pill != base:  # specificity capped a good reconstruction
        return (
            f"It rebuilds this activation well, but {_share(1 - specificity)} of the reference "
            "explanations rebuild it about as well: the activation sits near the average (a "
            "template token or a generic position), so the text is not specific to it."
        )
    if pill == "low" and specificity >= HIGH_SPECIFICITY:
        scale = (
            f"typical matching explanations of this source score {calibration.matched:.2f}"
            if calibration
            else "the fixed thresholds call anything from 0.5 low"
        )
        return (
            f"More specific than {_share(specificity)} of the reference explanations, yet low: "
            f"other texts rebuild this activation even worse, but the rebuild itself is far "
            f"from it ({scale}). Read it as the best of weak candidates."
        )
    return ""


def _share(fraction: float) -> str:
    return f"{round(fraction * 100)}%"
