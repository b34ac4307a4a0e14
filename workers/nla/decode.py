"""Batched token-by-token generation with a KV cache: per-row stop strings and end tokens, per-row
streaming of the text so far. Rows share one prompt length (no padding), as AV prompts of one
template do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: on_text(row, text_so_far)
OnText = Callable[[int, str], None]


@dataclass(frozen=True)
class Decoded:
    token_ids: list[int]
    text: str  # decoded, cut just after the first stop string
    stopped: bool  # a stop string or an end token ended the row (False: max_new_tokens ran out)


@dataclass(frozen=True)
class DecodeSpec:
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    seed: int = 0
    stop_strings: tuple[str, ...] = ()
    end_ids: frozenset[int] = frozenset()
    repetition_penalty: float = 1.0  # > 1 discourages tokens a row already generated (CTRL's rule)


def _pick(
    logits: torch.Tensor, spec: DecodeSpec, generator: torch.Generator | None
) -> torch.Tensor:
    if spec.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / spec.temperature, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def _penalise(logits: torch.Tensor, history: list[list[int]], penalty: float) -> torch.Tensor:
    """`[B, V]` logits with each row's already generated tokens made less likely: positive logits
    divided by `penalty`, negative ones multiplied (as transformers' RepetitionPenaltyLogitsProcessor)."""
    if penalty == 1.0 or not any(history):
        return logits
    logits = logits.clone()
    for row, ids in enumerate(history):
        if ids:
            index = torch.tensor(sorted(set(ids)), device=logits.device)
            seen = logits[row, index]
            logits[row, index] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def _cut(text: str, stops: Sequence[str]) -> str | None:
    """`text` cut just after the earliest stop string, or None when none occurs."""
    ends = [text.index(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else None


class _Rows:
    """Generated ids, texts and finished flags of the batch rows."""

    def __init__(self, batch: int, tokenizer: Any, spec: DecodeSpec, on_text: OnText | None):
        self.ids: list[list[int]] = [[] for _ in range(batch)]
        self.texts = [""] * batch
        self.stopped = [False] * batch
        self.tokenizer, self.spec, self.on_text = tokenizer, spec, on_text

    def new(self) -> int:
        """A new row, with nothing generated yet; its number."""
        self.ids.append([])
        self.texts.append("")
        self.stopped.append(False)
        return len(self.ids) - 1

    def add(self, row: int, token: int) -> None:
        if token in self.spec.end_ids:
            self.stopped[row] = True
            return
        self.ids[row].append(token)
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
        cut = _cut(text, self.spec.stop_strings)
        self.texts[row] = text if cut is None else cut
        self.stopped[row] = cut is not None
        if self.on_text is not None:
            self.on_text(row, self.texts[row])

    def result(self) -> list[Decoded]:
        return [
            Decoded(i, t, s) for i, t, s in zip(self.ids, self.texts, self.stopped, strict=True)
        ]


def generate(
    model: nn.Module,
    tokenizer: Any,
    spec: DecodeSpec,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    cache: Any = None,
    on_text: OnText | None = None,
) -> list[Decoded]:
    """Generate for a `[B, T]` prompt (ids or embeddings), optionally after a `cache` of the tokens
    before it; each row stops on its own and leaves the batch (and the KV cache) when it does."""
    prompt = input_ids if input_ids is not None else inputs_embeds
    assert prompt is not None
    batch, device = prompt.shape[0], prompt.device
    generator = torch.Generator().manual_seed(spec.seed) if spec.temperature > 0 else None
    rows = _Rows(batch, tokenizer, spec, on_text)
    active = list(range(batch))  # batch rows still generating, in cache order
    with torch.no_grad():
        out = model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        for step in range(spec.max_new_tokens):
            logits = _penalise(
                out.logits[:, -1, :], [rows.ids[row] for row in active], spec.repetition_penalty
            )
            tokens = _pick(logits, spec, generator)
            for row, token in zip(active, tokens.tolist(), strict=True):
                rows.add(row, token)
            keep = [k for k, row in enumerate(active) if not rows.stopped[row]]
            # The last token needs no forward pass of its own: its logits would go unused.
            if not keep or step == spec.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep)  # CPU indices select on every layer's device
                out.cache.batch_select_indices(index)
                tokens, active = tokens[index.to(tokens.device)], [active[k] for k in keep]
            out = model(
                input_ids=tokens.view(-1, 1).to(device),
                cache=out.cache,
                use_cache=True,
                logits_to_keep=1,
            )
    return rows.result()
