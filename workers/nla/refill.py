"""Slot refill (continuous batching) for the Hugging Face decode path: a running batch of at most
`slots` rows in which a row that stops frees its slot at once, and the next waiting row joins on
the following step (its prompt is prefilled alone, then its KV cache joins the batch's).

Rows of different lengths share one KV cache, left-padded: the padding is masked out of attention
and every row keeps its own positions (`position_ids`), so a row that joins mid-batch generates
exactly what it would alone (greedy; tests/unit/test_nla_refill.py checks it on a tiny model). The
columns that every remaining row pads are cut off as rows leave."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workers.nla.decode import Decoded, DecodeSpec, _penalise, _pick, _Rows


@dataclass(frozen=True)
class Prompt:
    """One row to generate for: its prompt `[1, T]` (ids or embeddings) after `cache`, a batch-1
    KV cache of the tokens before it (None: nothing before it). `injected` `[1, d]` is what the
    caller's `patch` puts into this row's prefill (the AV's block-output injection)."""

    input_ids: torch.Tensor | None = None
    inputs_embeds: torch.Tensor | None = None
    cache: Any = None
    injected: torch.Tensor | None = None

    @property
    def length(self) -> int:
        prompt = self.input_ids if self.input_ids is not None else self.inputs_embeds
        assert prompt is not None
        before = 0 if self.cache is None else int(self.cache.get_seq_length())
        return before + int(prompt.shape[1])


#: The next waiting row, or None when none waits now: asked while a slot is free, and asked again
#: each time a row stops (one may have come to wait meanwhile).
NextPrompt = Callable[[], Prompt | None]
#: on_done([(row, decoded), ...]) once per step, with the rows that stopped on it.
OnDone = Callable[[list[tuple[int, Decoded]]], None]
#: Wraps the one prefill of prompts that join together, each its own row of it, in that order.
Patch = Callable[[list[Prompt]], AbstractContextManager[None]]


@dataclass
class _Batch:
    """The running rows: their row numbers, next tokens, real lengths, the padded cache and mask."""

    rows: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    cache: Any = None
    mask: torch.Tensor | None = None  # [B, L]: 1 for a real token, 0 for padding

    def width(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])


def generate_refill(
    model: nn.Module,
    tokenizer: Any,
    spec: DecodeSpec,
    next_prompt: NextPrompt,
    *,
    slots: int,
    on_text: Callable[[int, str], None] | None = None,
    on_done: OnDone | None = None,
    patch: Patch | None = None,
) -> list[Decoded]:
    """Generate for every row `next_prompt` hands out, at most `slots` at a time; rows are numbered
    in the order they were handed out. Returns their results in that order, once a free slot finds
    no row waiting and every running row stopped. Prompts handed out together (a batch of freed
    slots) of one length are prefilled as one batch."""
    generator = torch.Generator().manual_seed(spec.seed) if spec.temperature > 0 else None
    rows = _Rows(0, tokenizer, spec, on_text)
    batch, results = _Batch(), {}
    device = next(model.parameters()).device
    asking = True
    with torch.no_grad():
        while True:
            joining: list[Prompt] = []
            while asking and len(batch.rows) + len(joining) < slots:
                prompt = next_prompt()
                if prompt is None:
                    asking = False
                    break
                joining.append(prompt)
            numbers = [rows.new() for _ in joining]  # rows are numbered as handed out
            for group in _alike(list(zip(numbers, joining, strict=True))):
                _join(model, spec, generator, rows, batch, group, patch)
            finished = [r for r in batch.rows if _finished(rows, spec, r)]
            results.update({row: rows.result()[row] for row in finished})
            if finished and on_done is not None:
                on_done([(row, results[row]) for row in finished])
            asking = asking or bool(finished)
            _leave(batch, [k for k, r in enumerate(batch.rows) if r not in results])
            if batch.rows:
                _step(model, spec, generator, rows, batch, device)
            elif not asking:
                break
    return [results[row] for row in range(len(results))]


def _finished(rows: _Rows, spec: DecodeSpec, row: int) -> bool:
    return rows.stopped[row] or len(rows.ids[row]) >= spec.max_new_tokens


def _alike(prompts: list[tuple[int, Prompt]]) -> list[list[tuple[int, Prompt]]]:
    """Numbered prompts grouped by what one prefill can take: ids or embeddings, one length."""
    groups: dict[tuple[bool, int, int], list[tuple[int, Prompt]]] = {}
    for number, prompt in prompts:
        before = 0 if prompt.cache is None else int(prompt.cache.get_seq_length())
        key = (prompt.input_ids is None, before, prompt.length)
        groups.setdefault(key, []).append((number, prompt))
    return list(groups.values())


def _join(
    model: nn.Module,
    spec: DecodeSpec,
    generator: torch.Generator | None,
    rows: _Rows,
    batch: _Batch,
    group: list[tuple[int, Prompt]],
    patch: Patch | None,
) -> None:
    """Prefill the `group`'s prompts (one length) as one batch, pick their first tokens, and add
    them to the running batch (padded to one width)."""
    prompts = [prompt for _, prompt in group]
    length = prompts[0].length  # before the prefill extends the caches
    cache = _stacked([p.cache for p in prompts])
    with patch(prompts) if patch is not None else contextlib.nullcontext():
        out = model(
            input_ids=_cat([p.input_ids for p in prompts]),
            inputs_embeds=_cat([p.inputs_embeds for p in prompts]),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    if any(getattr(layer, "is_sliding", False) for layer in _layers(out.cache)):
        raise NotImplementedError("slot refill needs a KV cache without sliding-window layers")
    tokens = _pick(out.logits[:, -1, :], spec, generator).tolist()
    for (row, _), token in zip(group, tokens, strict=True):
        rows.add(row, token)
    mask = torch.ones(len(group), length, dtype=torch.long, device=out.logits.device)
    if batch.cache is None:
        batch.cache, batch.mask = out.cache, mask
    else:
        width = max(batch.width(), length)
        _pad_cache(batch.cache, width - batch.width())
        _pad_cache(out.cache, width - length)
        _cat_cache(batch.cache, out.cache)
        assert batch.mask is not None
        batch.mask = torch.cat([_pad_mask(batch.mask, width), _pad_mask(mask, width)])
    batch.rows += [row for row, _ in group]
    batch.tokens += tokens
    batch.lengths += [length] * len(group)


def _stacked(caches: list[Any]) -> Any:
    """The batch-1 caches of one length as one cache (the first one, extended); None stays None."""
    if caches[0] is None:
        return None
    for other in caches[1:]:
        _cat_cache(caches[0], other)
    return caches[0]


def _cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat([t for t in tensors if t is not None])


def _step(
    model: nn.Module,
    spec: DecodeSpec,
    generator: torch.Generator | None,
    rows: _Rows,
    batch: _Batch,
    device: torch.device,
) -> None:
    """One decode step of every running row, each at its own position."""
    assert batch.mask is not None
    ones = torch.ones(len(batch.rows), 1, dtype=batch.mask.dtype, device=batch.mask.device)
    batch.mask = torch.cat([batch.mask, ones], dim=1)
    out = model(
        input_ids=torch.tensor(batch.tokens, device=device).view(-1, 1),
        attention_mask=batch.mask,
        position_ids=torch.tensor(batch.lengths, device=device).view(-1, 1),
        cache=batch.cache,
        use_cache=True,
        logits_to_keep=1,
    )
    batch.cache = out.cache
    history = [rows.ids[row] for row in batch.rows]
    logits = _penalise(out.logits[:, -1, :], history, spec.repetition_penalty)
    tokens = _pick(logits, spec, generator).tolist()
    for k, (row, token) in enumerate(zip(batch.rows, tokens, strict=True)):
        rows.add(row, token)
        batch.tokens[k] = token
        batch.lengths[k] += 1


def _leave(batch: _Batch, keep: list[int]) -> None:
    """Keep the batch rows at `keep`; cut the left columns every one of them pads."""
    if len(keep) == len(batch.rows):
        return
    batch.rows = [batch.rows[k] for k in keep]
    batch.tokens = [batch.tokens[k] for k in keep]
    batch.lengths = [batch.lengths[k] for k in keep]
    if not keep:
        batch.cache = batch.mask = None
        return
    assert batch.mask is not None
    index = torch.tensor(keep)
    batch.cache.batch_select_indices(index)
    batch.mask = batch.mask[index.to(batch.mask.device)]
    lead = batch.width() - max(batch.lengths)
    if lead > 0:
        for layer in _layers(batch.cache):
            layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]
        batch.mask = batch.mask[:, lead:]


def _layers(cache: Any) -> Iterator[Any]:
    yield from cache.layers


def _pad_cache(cache: Any, pad: int) -> None:
    """Left-pad every layer's keys and values `[B, H, L, D]` with `pad` zero columns."""
    if pad <= 0:
        return
    for layer in _layers(cache):
        layer.keys = _left_pad(layer.keys, pad)
        layer.values = _left_pad(layer.values, pad)


def _left_pad(tensor: torch.Tensor, pad: int) -> torch.Tensor:
    shape = (*tensor.shape[:2], pad, *tensor.shape[3:])
    return torch.cat([tensor.new_zeros(shape), tensor], dim=2)


def _cat_cache(cache: Any, other: Any) -> None:
    for mine, theirs in zip(_layers(cache), _layers(other), strict=True):
        mine.keys = torch.cat([mine.keys, theirs.keys])
        mine.values = torch.cat([mine.values, theirs.values])


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    pad = width - mask.shape[1]
    return torch.cat([mask.new_zeros(mask.shape[0], pad), mask], dim=1) if pad > 0 else mask
