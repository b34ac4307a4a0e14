"""CPU benchmarks of the NLA engine on the demo source, each measured side by side in one run:

1. 16 positions explained as one batch vs one by one (goal ≥ 3×), outputs compared;
2. activation capture that stops after block K vs a full forward pass of the target;
3. a cold explain vs one whose capture is served from the activation cache;
4. four users' requests (4 positions each, different conversations) as one shared batch vs one job
   each, as a worker takes them with and without cross-request batching;
5. 32 single-token clicks arriving together, verbalized as today's job batches (two of 16, each
   until its longest row stops) vs slot refill (16 slots; a row that stops lets the next one in),
   outputs compared. Only the AV's generation differs between the two; capture and scoring are the
   same work either way and are left out of the timing.

Run: `.venv/bin/python benchmarks/nla_cpu.py` (builds the demo NLA first if it is missing).
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from benchmarks._common import best_of, demo_engine, machine
from workers.nla.capture import capture_block_output
from workers.nla.engine import NlaEngine
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress

CONVERSATION = [
    ChatTurn("user", "My cat loves to sleep on the warm windowsill in the afternoon. Why?"),
    ChatTurn(
        "assistant",
        "Cats seek warmth: a sunny windowsill is a cosy, safe spot with a view, and the afternoon "
        "sun keeps it warm for hours, so it becomes a favourite place to nap.",
    ),
]
SETTINGS = GenerationSettings(temperature=0.0, max_new_tokens=24)


def main() -> None:
    engine = demo_engine()
    tokens = engine.tokenize(CONVERSATION).token_ids
    positions = list(range(len(tokens) - 16, len(tokens)))
    print(f"machine: {machine()}; {len(tokens)} tokens, layer {engine.layer}, 16 positions")

    def explain(ps: list[int]) -> list[str]:
        return [r.text for r in engine.explain(tokens, ps, SETTINGS, NoProgress())]

    clear = engine.cache.clear  # cold captures for both sides
    batched, batch_texts = best_of(2, lambda: explain(positions), reset=clear)
    sequential, seq_texts = best_of(
        1, lambda: [t for p in positions for t in explain([p])], reset=clear
    )
    same = sum(a == b for a, b in zip(batch_texts, seq_texts, strict=True))
    print(
        f"[batching] 16 positions: batched {batched:.2f} s, sequential {sequential:.2f} s, "
        f"ratio {sequential / batched:.1f}x; identical greedy texts {same}/16"
    )

    ids = torch.tensor([tokens])
    stop, _ = best_of(5, lambda: capture_block_output(engine.target.model, ids, engine.layer))
    with torch.no_grad():
        full, _ = best_of(5, lambda: engine.target.model(ids, output_hidden_states=True))
    print(
        f"[capture] block {engine.layer} of {engine.target.num_layers}: stop-at-K {stop * 1e3:.1f} ms, "
        f"full forward {full * 1e3:.1f} ms, ratio {full / stop:.1f}x"
    )

    cold, _ = best_of(3, lambda: engine.capture(tokens, positions), reset=clear)
    warm, _ = best_of(3, lambda: engine.capture(tokens, positions))
    print(
        f"[cache] capture of 16 positions: cold {cold * 1e3:.1f} ms, cached {warm * 1e3:.2f} ms, "
        f"ratio {cold / warm:.0f}x"
    )
    cold_x, _ = best_of(2, lambda: explain(positions[:4]), reset=clear)
    warm_x, _ = best_of(2, lambda: explain(positions[:4]))
    print(
        f"[cache] explain of 4 positions: cold {cold_x:.2f} s, cached capture {warm_x:.2f} s, "
        f"ratio {cold_x / warm_x:.2f}x (the AV's generation dominates; a repeated click is a "
        "database lookup and never reaches the worker)"
    )
    shared_batch(engine)
    refill(engine)


def refill(engine: NlaEngine) -> None:
    clicks = []
    for text in (
        "My cat loves to sleep on the warm windowsill in the afternoon.",
        "What is the capital of France, and why is it famous?",
        "Write a haiku about autumn leaves falling in the park.",
        "How do I sort a list of numbers in Python?",
    ):
        ids = engine.tokenize([ChatTurn("user", text)]).token_ids
        clicks.append(engine.capture(ids, list(range(len(ids) - 8, len(ids)))))
    vectors = torch.cat(clicks)  # 32 clicks, one token each, from four conversations
    av = engine.verbalizer

    def batches() -> list[str]:
        return [
            t.raw_text
            for start in (0, 16)
            for t in av.verbalize(vectors[start : start + 16], SETTINGS)
        ]

    def refilled() -> list[str]:
        waiting = iter(vectors)
        return [
            t.raw_text for t in av.verbalize_refill(lambda: next(waiting, None), SETTINGS, slots=16)
        ]

    fixed, fixed_texts = best_of(2, batches)
    slots, slot_texts = best_of(2, refilled)
    same = sum(a == b for a, b in zip(fixed_texts, slot_texts, strict=True))
    print(
        f"[refill] 32 single-token clicks: job batches 2 x 16 {fixed:.2f} s, slot refill "
        f"(16 slots) {slots:.2f} s, ratio {fixed / slots:.2f}x; identical greedy texts {same}/32"
    )


def shared_batch(engine: NlaEngine) -> None:
    users = [
        [ChatTurn("user", text)]
        for text in (
            "My cat loves to sleep on the warm windowsill in the afternoon.",
            "What is the capital of France, and why is it famous?",
            "Write a haiku about autumn leaves falling in the park.",
            "How do I sort a list of numbers in Python?",
        )
    ]
    requests = []
    for turns in users:
        ids = engine.tokenize(turns).token_ids
        requests.append((ids, list(range(len(ids) - 4, len(ids)))))
    clear = engine.cache.clear
    shared, _ = best_of(2, lambda: engine.explain_batch(requests, SETTINGS, NoProgress()), clear)
    apart, _ = best_of(
        2, lambda: [engine.explain(ids, ps, SETTINGS, NoProgress()) for ids, ps in requests], clear
    )
    print(
        f"[shared] 4 users x 4 positions: one shared batch {shared:.2f} s, one job each "
        f"{apart:.2f} s, ratio {apart / shared:.1f}x"
    )


if __name__ == "__main__":
    main()
