"""Autointerp scores of a label against a vector (../shared/NLA.md §6), as pure arithmetic:

- `nla_reconstructor`: cos(AR(label), vector), the AR reading the label as if the AV had written it;
- `nla_verbalizer`: cosine of sentence embeddings of the AV's text for the vector and of the label;
- `nla_verbalizer_last`: the same with only the last paragraph of the AV's text.

No torch here: plain float sequences in, floats out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

METHODS: tuple[str, ...] = ("nla_reconstructor", "nla_verbalizer", "nla_verbalizer_last")


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """cos(a, b) = a·b / (‖a‖‖b‖); 0.0 when either is the zero vector."""
    if len(a) != len(b):
        raise ValueError(f"cosine of vectors of lengths {len(a)} and {len(b)}")
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norms if norms else 0.0


def last_paragraph(text: str) -> str:
    """The last non-empty paragraph (blocks split by blank lines) of `text`, stripped; `text`
    stripped when it has one paragraph."""
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    return paragraphs[-1] if paragraphs else text.strip()


@dataclass(frozen=True)
class AutointerpScores:
    nla_reconstructor: float
    nla_verbalizer: float
    nla_verbalizer_last: float


def autointerp_scores(
    reconstructed_label: Sequence[float],
    vector: Sequence[float],
    label_embedding: Sequence[float],
    text_embedding: Sequence[float],
    last_paragraph_embedding: Sequence[float],
) -> AutointerpScores:
    """The three scores from AR(label) and the vector (`[d]` each) and the three sentence embeddings."""
    return AutointerpScores(
        nla_reconstructor=cosine(reconstructed_label, vector),
        nla_verbalizer=cosine(text_embedding, label_embedding),
        nla_verbalizer_last=cosine(last_paragraph_embedding, label_embedding),
    )
