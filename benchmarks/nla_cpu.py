"""CPU benchmarks of the NLA engine on the demo source, each measured side by side in one run:

1. 16 positions explained as one batch vs one by one (goal ≥ 3×), outputs compared;
2. activation capture that stops after block K vs a full forward pass of the target;
3. a cold explain vs one whose capture is served from the activation cache;
4. four users' requests (4 positions each, different conversations) as one shared batch vs one job
   each, as a worker takes them with and without cross-request batching;
5. 32 single-token clicks arriving together (four conversations, each click its own job), run
   through the worker's own path (`workers.pipeline.run_explain`: capture, AV, AR, results stored)
   as the worker takes them: today's job batches (the first job takes 16 rows, the next the other
   16, each batch until its longest row stops) vs slot refill (16 slots; a row that stops lets the
   next waiting one in, captured alone). The store is in memory (tests/fakes.py, taking batch-mates
   as the Django store does), so database time is left out; outputs compared. Also the AV alone,
   two batches of 16 vs one refilled decode.

Run: `.venv/bin/python benchmarks/nla_cpu.py [batching capture cache shared refill]` (all by
default; builds the demo NLA first if it is missing).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from benchmarks._common import best_of, demo_engine, machine
from tests.fakes import MemoryStore
from workers.nla.capture import capture_block_output
from workers.nla.engine import NlaEngine
from workers.nla.types import MAX_POSITIONS_PER_REQUEST, ChatTurn, GenerationSettings, NoProgress
from workers.pipeline import run_explain
from workers.store import ExplainJob

CONVERSATION = [
    ChatTurn("user", "My cat loves to sleep on the warm windowsill in the afternoon. Why?"),
    ChatTurn(
        "assistant",
        "Cats seek warmth: a sunny windowsill is a cosy, safe spot with a view, and the afternoon "
        "sun keeps it warm for hours, so it becomes a favourite place to nap.",
    ),
]
SETTINGS = GenerationSettings(temperature=0.0, max_new_tokens=24)
SETTINGS_DICT = {"temperature": 0.0, "max_new_tokens": 24, "seed": 0}


def main(sections: list[str]) -> None:
    engine = demo_engine()
    tokens = engine.tokenize(CONVERSATION).token_ids
    print(f"machine: {machine()}; {len(tokens)} tokens, layer {engine.layer}; {load()}")
    for name in sections or list(SECTIONS):
        SECTIONS[name](engine, tokens)
    print(f"after: {load()}")


def load() -> str:
    return "load average " + " ".join(f"{n:.2f}" for n in os.getloadavg())


def batching(engine: NlaEngine, tokens: list[int]) -> None:
    positions = list(range(len(tokens) - 16, len(tokens)))

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


def capture(engine: NlaEngine, tokens: list[int]) -> None:
    ids = torch.tensor([tokens])
    stop, _ = best_of(5, lambda: capture_block_output(engine.target.model, ids, engine.layer))
    with torch.no_grad():
        full, _ = best_of(5, lambda: engine.target.model(ids, output_hidden_states=True))
    print(
        f"[capture] block {engine.layer} of {engine.target.num_layers}: stop-at-K {stop * 1e3:.1f} ms, "
        f"full forward {full * 1e3:.1f} ms, ratio {full / stop:.1f}x"
    )


def cache(engine: NlaEngine, tokens: list[int]) -> None:
    positions, clear = list(range(len(tokens) - 16, len(tokens))), engine.cache.clear

    def explain(ps: list[int]) -> list[str]:
        return [r.text for r in engine.explain(tokens, ps, SETTINGS, NoProgress())]

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


USERS = (
    "My cat loves to sleep on the warm windowsill in the afternoon.",
    "What is the capital of France, and why is it famous?",
    "Write a haiku about autumn leaves falling in the park.",
    "How do I sort a list of numbers in Python?",
)


class WorkerLikeStore(MemoryStore):
    """MemoryStore whose jobs take batch-mates as the Django store's do: the named queued rows,
    then the other queued rows of the source, oldest first, one batch in all."""

    def explain_job(self, explanation_ids: list[str]) -> ExplainJob | None:
        queued = [pk for pk, row in self.rows.items() if row.status == "queued"]
        named = [pk for pk in explanation_ids if pk in queued]
        mates = [pk for pk in queued if pk not in named]
        return super().explain_job((named + mates)[:MAX_POSITIONS_PER_REQUEST])

    def finish_explanation(self, explanation_id: str, fields: dict[str, Any]) -> None:
        super().finish_explanation(explanation_id, fields)
        self.rows[explanation_id].fields["stored_at"] = time.perf_counter()


class FixedBatches:
    """The engine as a worker without slot refill sees it (a vLLM or sliding-window AV)."""

    def __init__(self, engine: NlaEngine) -> None:
        self.engine = engine

    def can_refill(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def clicks_through_the_worker(engine: Any) -> tuple[list[str], float]:
    """32 single-token clicks queued together, each its own job, run one job at a time: their
    texts and the mean seconds from the start to each one's stored result."""
    store, start = WorkerLikeStore(), time.perf_counter()
    jobs = []
    for user, text in enumerate(USERS):
        ids = engine.tokenize([ChatTurn("user", text)]).token_ids
        snapshot = store.add_snapshot(f"conversation-{user}", list(ids))
        for p in range(len(ids) - 8, len(ids)):
            jobs.append(store.queue(snapshot, p, "demo", SETTINGS_DICT))
    for pk in jobs:
        run_explain(store, [pk], engine_for=lambda _: engine)
    assert {row.status for row in store.rows.values()} == {"done"}
    waits = [store.rows[pk].fields["stored_at"] - start for pk in jobs]
    return [store.rows[pk].fields["raw_text"] for pk in jobs], sum(waits) / len(waits)


def refill(engine: NlaEngine, _tokens: list[int]) -> None:
    clear = engine.cache.clear  # cold captures for both sides
    fixed, (fixed_texts, fixed_wait) = best_of(
        2, lambda: clicks_through_the_worker(FixedBatches(engine)), clear
    )
    slots, (slot_texts, slot_wait) = best_of(2, lambda: clicks_through_the_worker(engine), clear)
    same = sum(a == b for a, b in zip(fixed_texts, slot_texts, strict=True))
    print(
        f"[refill] 32 single-token clicks, one job each, through the worker: job batches "
        f"{fixed:.2f} s, slot refill (16 slots) {slots:.2f} s, ratio {fixed / slots:.2f}x; "
        f"mean time to a stored result {fixed_wait:.2f} s vs {slot_wait:.2f} s "
        f"(last run of each); identical greedy texts {same}/32"
    )
    clicks = []
    for text in USERS:
        ids = engine.tokenize([ChatTurn("user", text)]).token_ids
        clicks.append(engine.capture(ids, list(range(len(ids) - 8, len(ids)))))
    vectors = torch.cat(clicks)  # the same 32 clicks' activations
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
    lengths = sorted(
        len(av.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in slot_texts
    )
    print(
        f"[refill] the AV alone on those clicks: 2 batches of 16 {fixed:.2f} s, slot refill "
        f"(16 slots) {slots:.2f} s, ratio {fixed / slots:.2f}x; identical greedy texts {same}/32; "
        f"texts of {lengths[0]}-{lengths[-1]} tokens (median {lengths[16]}, at most "
        f"{SETTINGS.max_new_tokens}): slot refill gains only where rows stop at different steps"
    )


def shared_batch(engine: NlaEngine, _tokens: list[int]) -> None:
    users = [[ChatTurn("user", text)] for text in USERS]
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


SECTIONS: dict[str, Callable[[NlaEngine, list[int]], None]] = {
    "batching": batching,
    "capture": capture,
    "cache": cache,
    "shared": shared_batch,
    "refill": refill,
}

if __name__ == "__main__":
    main(sys.argv[1:])
