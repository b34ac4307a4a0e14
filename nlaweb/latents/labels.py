"""Scoring an autointerp label of a latent with the three scorers (../shared/NLA.md §6), through the
API's own score job (ApiJob kind `score`, workers/raw_vectors.py: the AV explains the same scaled
decoder row, the AR reads the label, the sentence embedder compares texts); and the exports of a
source's explanations and a person's labels."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from nlaweb.api.models import ApiJob
from nlaweb.explanations.table import spreadsheet_cell
from nlaweb.jobs.broker import enqueue
from nlaweb.latents.attached import SourceSae
from nlaweb.latents.batches import SETTINGS, LatentsRejected, rows_of, vector
from nlaweb.latents.models import LatentExplanation, LatentLabel
from workers.contracts import TASK_VECTORS

MAX_LABEL_CHARS = 500


@dataclass(frozen=True)
class Scorer:
    key: str
    name: str
    definition: str
    caveat: str


#: The three scorers, their definitions and the seed's caveats, in the order the page shows them.
SCORERS: tuple[Scorer, ...] = (
    Scorer(
        "nla_reconstructor",
        "Reconstructor",
        "cos(AR(label), vector): the AR reads the label as if the AV had written it, and its "
        "predicted activation is compared with the latent's decoder direction.",
        "The NLA authors report that this scorer works poorly: the AR was trained on the AV's own "
        "prose, and a terse label is far from that distribution.",
    ),
    Scorer(
        "nla_verbalizer",
        "Verbalizer",
        "Cosine of sentence embeddings (all-MiniLM-L6-v2) of the AV's whole text for the "
        "decoder direction and of the label.",
        "Only as good as the AV's text: a failed injection or a generic explanation makes every "
        "label score alike.",
    ),
    Scorer(
        "nla_verbalizer_last",
        "Verbalizer (last paragraph)",
        "The same embedding cosine with only the last paragraph of the AV's text.",
        "Assumes a three-paragraph AV whose last paragraph describes the token itself (the "
        "released checkpoints); an AV that writes one sentence (the demo) makes it equal the "
        "verbalizer score.",
    ),
)


def clean_label(text: str) -> str:
    label = " ".join(text.split())
    if not label:
        raise LatentsRejected("Write a label to score, e.g. 'words about animals'.")
    if len(label) > MAX_LABEL_CHARS:
        raise LatentsRejected(
            f"A label has at most {MAX_LABEL_CHARS} characters; this one has {len(label)}."
        )
    return label


def score_label(user: Any, source: SourceSae, index: int, text: str) -> LatentLabel:
    """Queue the three scores of `text` for latent `index`; the row points at its job."""
    label = clean_label(text)
    payload = {
        "vector": vector(source, index),
        "label": label,
        "settings": SETTINGS,
        "latent": index,
    }
    with transaction.atomic():
        job = ApiJob.objects.create(
            owner=user, kind=ApiJob.Kind.SCORE, source_id=source.source.id, payload=payload
        )
        row = LatentLabel.objects.create(
            owner=user, source_id=source.source.id, index=index, label=label, job=job
        )
        enqueue(TASK_VECTORS, str(job.pk))
    return row


@dataclass(frozen=True)
class LabelScores:
    row: LatentLabel
    status: str  # queued | running | done | failed
    scores: dict[str, float]
    explanation: str
    last_paragraph: str
    error: str

    @property
    def pending(self) -> bool:
        return self.status in ("queued", "running")


def label_scores(row: LatentLabel) -> LabelScores:
    job = row.job
    if job is None:
        return LabelScores(row, "failed", {}, "", "", "This label's job is gone; score it again.")
    result = job.result or {}
    scores = {s.key: float(result[s.key]) for s in SCORERS if s.key in result}
    return LabelScores(
        row,
        str(job.status),
        scores,
        str(result.get("explanation", "")),
        str(result.get("last_paragraph", "")),
        job.error,
    )


def labels_of(user: Any, source_id: str, index: int | None = None) -> list[LabelScores]:
    rows = LatentLabel.objects.select_related("job").filter(owner_id=user.pk, source_id=source_id)
    if index is not None:
        rows = rows.filter(index=index)
    return [label_scores(r) for r in rows[:200]]


def search(user: Any, source_id: str, query: str, limit: int = 50) -> list[tuple[int, str]]:
    """(latent, matching text) for explanations of the source and the person's own labels that
    contain `query` (case-insensitive), latents in index order."""
    query = query.strip()
    if not query:
        return []
    found: dict[int, str] = {}
    for row in LatentExplanation.objects.filter(
        source_id=source_id, status=LatentExplanation.Status.DONE, description__icontains=query
    ).order_by("index")[:limit]:
        found.setdefault(row.index, row.description)
    for label in LatentLabel.objects.filter(
        owner_id=user.pk, source_id=source_id, label__icontains=query
    ).order_by("index")[:limit]:
        found.setdefault(label.index, label.label)
    return sorted(found.items())[:limit]


def explained(source_id: str) -> list[LatentExplanation]:
    """Every latent of the source that has a row, settled."""
    indices = LatentExplanation.objects.filter(source_id=source_id).values_list("index", flat=True)
    return rows_of(source_id, sorted(indices))


EXPORT_COLUMNS = (
    "latent",
    "kind",
    "text",
    "status",
    "relative_mse",
    "fve",
    "nla_reconstructor",
    "nla_verbalizer",
    "nla_verbalizer_last",
)


def export_rows(user: Any, source_id: str) -> list[dict[str, Any]]:
    """One row per explanation (the AV's text with the AR's score) and per label of the person
    (with the three scores), ordered by latent."""
    rows: list[dict[str, Any]] = []
    for e in explained(source_id):
        rows.append(
            {
                "latent": e.index,
                "kind": "explanation",
                "text": e.description or e.error,
                "status": e.status,
                "relative_mse": e.relative_mse,
                "fve": e.fve,
            }
        )
    for scored in labels_of(user, source_id):
        rows.append(
            {
                "latent": scored.row.index,
                "kind": "label",
                "text": scored.row.label,
                "status": scored.status,
                **{s.key: scored.scores.get(s.key) for s in SCORERS},
            }
        )
    rows.sort(key=lambda r: (r["latent"], r["kind"] != "explanation"))
    return [{c: r.get(c) for c in EXPORT_COLUMNS} for r in rows]


def export_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
    writer.writeheader()
    for row in rows:
        # Labels are anyone's text: a cell a spreadsheet would run as a formula is quoted.
        writer.writerow({k: spreadsheet_cell(v) for k, v in row.items()})
    return out.getvalue()
