"""Specificity on the demo NLA: template tokens (`<|im_start|>`, role names, the template's newlines,
`<|im_end|>`) vs content tokens of a few chat-templated conversations, each explanation ranked against
the build-time reference pool alone (a fresh pool per conversation, so the figures do not depend on
the order); and the held-out pairs of the build, each ranked against the other held-out predictions.

Run: `.venv/bin/python benchmarks/specificity_demo.py` (builds the demo NLA first if it is missing).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import demo_engine, machine
from workers.nla.demo import DemoPlan, _corpus_vectors, _heldout_start
from workers.nla.engine import NlaEngine
from workers.nla.reference_pool import POOL_SIZE, ReferencePool, load_pool_file
from workers.nla.scoring import confidence
from workers.nla.specificity import specificity
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress, TokenExplanation

CONVERSATIONS = [
    [
        ChatTurn("user", "My cat loves to sleep on the warm windowsill in the afternoon."),
        ChatTurn("assistant", "Cats like warm places because the sun keeps them cosy."),
    ],
    [
        ChatTurn("user", "What is the capital of France?"),
        ChatTurn("assistant", "The capital of France is Paris, a city on the Seine."),
    ],
    [
        ChatTurn("user", "Write one line about the ocean at night."),
        ChatTurn("assistant", "Silver waves roll under the moon while the harbour sleeps."),
    ],
    [
        ChatTurn("user", "How do I bake bread at home?"),
        ChatTurn(
            "assistant", "Mix flour, water, yeast and salt, let the dough rise, then bake it."
        ),
    ],
]
SETTINGS = GenerationSettings(temperature=0.0, max_new_tokens=24)
HEADER, FOOTER = 3, 2  # <|im_start|> role \n ... <|im_end|> \n


def kinds(engine: NlaEngine, turns: list[ChatTurn]) -> tuple[list[int], dict[int, str]]:
    """The token ids, and for each position of the turns (not the system preamble) its kind."""
    tokenized = engine.tokenize(turns)
    kind: dict[int, str] = {}
    for span in tokenized.spans:
        if not 0 <= span.message_index < len(turns):
            continue
        for p in range(span.start, span.end):
            inside = span.start + HEADER <= p < span.end - FOOTER
            kind[p] = "content" if inside else "template"
    return tokenized.token_ids, kind


def explain_all(engine: NlaEngine, ids: list[int], positions: list[int]) -> list[TokenExplanation]:
    """Each batch of 16 ranked against the build-time pool alone (the ring is reset before each)."""
    results: list[TokenExplanation] = []
    for start in range(0, len(positions), 16):
        engine.pool = ReferencePool.from_checkpoint(
            Path(engine.source.ar), engine.reconstructor.meta.d_model
        )
        results += engine.explain(ids, positions[start : start + 16], SETTINGS, NoProgress())
    return results


def summary(name: str, rows: list[TokenExplanation]) -> None:
    spec = [r.specificity for r in rows if r.specificity is not None]
    rel = [r.fidelity.relative_mse for r in rows if r.fidelity.relative_mse is not None]
    high_before = sum(confidence(r.fidelity.relative_mse) == "high" for r in rows)
    high_after = sum(r.fidelity.confidence == "high" for r in rows)
    quart = statistics.quantiles(spec, n=4)
    print(
        f"  {name:9s} n={len(rows):3d}  specificity median {statistics.median(spec):.2f} "
        f"(quartiles {quart[0]:.2f}–{quart[2]:.2f}, ≥0.8: {sum(s >= 0.8 for s in spec)}, "
        f"<0.5: {sum(s < 0.5 for s in spec)})  relative MSE median {statistics.median(rel):.2f}  "
        f"'high' by relative MSE alone {high_before}, after the cap {high_after}"
    )


def heldout(engine: NlaEngine) -> None:
    """Each held-out pair's matched prediction ranked against the other held-out predictions."""
    plan = DemoPlan()
    vectors = _corpus_vectors(engine.target, plan, lambda line: None)
    activations = vectors[_heldout_start(len(vectors), plan) :][:POOL_SIZE]
    pool = load_pool_file(Path(engine.source.ar), engine.reconstructor.meta.d_model)
    assert pool is not None and len(pool) == len(activations)
    scale = engine.reconstructor.meta.mse_scale
    ranks = [
        specificity(pool[i], activations[i], pool[[j for j in range(len(pool)) if j != i]], scale)
        for i in range(len(pool))
    ]
    values = [r for r in ranks if r is not None]
    quart = statistics.quantiles(values, n=4)
    print(
        f"  held-out pairs n={len(values)}: matched specificity median {statistics.median(values):.2f} "
        f"(quartiles {quart[0]:.2f}–{quart[2]:.2f}), ≥0.8: {sum(v >= 0.8 for v in values)}, "
        f"<0.5: {sum(v < 0.5 for v in values)}"
    )


def main() -> None:
    engine = demo_engine()
    print(f"machine: {machine()}; reference pool: {len(engine.pool)} build-time predictions")
    heldout(engine)
    by_kind: dict[str, list[TokenExplanation]] = {"template": [], "content": []}
    first: list[TokenExplanation] = []
    for turns in CONVERSATIONS:
        ids, kind = kinds(engine, turns)
        results = explain_all(engine, ids, sorted(kind))
        first = first or [r for r in results if kind[r.position] == "content"]
        for result in results:
            by_kind[kind[result.position]].append(result)
    for name, rows in by_kind.items():
        summary(name, rows)
    print(
        "  template tokens (relative MSE, specificity, pill by relative MSE → after the cap, text):"
    )
    for r in by_kind["template"]:
        line(r)
    print("  content tokens of the first conversation:")
    for r in first:
        line(r)


def line(r: TokenExplanation) -> None:
    print(
        f"    #{r.position:3d} {r.token_text!r:16s} {r.fidelity.relative_mse:.2f} "
        f"{r.specificity:.2f} {confidence(r.fidelity.relative_mse)} → {r.fidelity.confidence}  "
        f"{r.text[:50]!r}"
    )


if __name__ == "__main__":
    main()
