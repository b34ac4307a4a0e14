"""The activation verbalizer (AV): vectors in, explanations out, one generation batch per request."""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from workers.nla.decode import Decoded, DecodeSpec, generate
from workers.nla.errors import CheckpointIncompatible, mismatch
from workers.nla.inject import embeddings_with_injection, patched_block_output, rescale
from workers.nla.loading import (
    LoadModel,
    decoder_layers,
    load_causal_lm,
    load_tokenizer,
    text_config,
)
from workers.nla.refill import Prompt, generate_refill
from workers.nla.sidecar import SIDECAR, AvMeta, Overrides, parse_av, read_yaml
from workers.nla.types import GenerationSettings, VerbalizedText

if TYPE_CHECKING:
    from workers.nla.backends import Generator

_EXPLANATION = re.compile(r"<explanation>\s*(.*?)\s*(?:</explanation>|$)", re.DOTALL)


_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff]")
INJECTION_SUSPECT = (
    "This explanation is written in CJK characters or about the marker token, the usual sign that "
    "the injection failed (wrong scale, missing √d, a double BOS or a drifted template)."
)


def injection_suspect(text: str, marker: str) -> bool:
    """True for text that NLAs produce when the injected vector did not land (../shared/NLA.md §3.8)."""
    return bool(_CJK.search(text)) or (len(marker) == 1 and marker in text)


def extract_explanation(raw: str) -> str:
    """The text inside `<explanation>…</explanation>` (an unclosed tag keeps the rest); untagged
    output (the demo AV, some third-party AVs) is returned stripped."""
    match = _EXPLANATION.search(raw)
    return (match.group(1) if match else raw).strip()


def prompt_ids(tokenizer: Any, meta: AvMeta) -> list[int]:
    """The AV prompt with the marker, tokenized in one step (chat-templated unless the sidecar says not)."""
    content = meta.template.replace("{injection_char}", meta.injection_char)
    if meta.chat_template:
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True
        )
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    else:
        ids = tokenizer(content, add_special_tokens=True)["input_ids"]
    return [int(i) for i in ids]


def check_prompt(tokenizer: Any, meta: AvMeta, ids: list[int], where: str) -> int:
    """Run the marker contract of ../shared/NLA.md §3 step 2; returns the marker's position."""
    encoded = list(tokenizer.encode(meta.injection_char, add_special_tokens=False))
    if len(encoded) != 1:
        raise mismatch(where, "tokens.injection_char", [meta.injection_token_id], encoded)
    if encoded[0] != meta.injection_token_id:  # one token, but not the one the sidecar names
        raise mismatch(where, "tokens.injection_token_id", meta.injection_token_id, encoded[0])
    count = ids.count(meta.injection_token_id)
    if count != 1:
        raise mismatch(
            where, "tokens.injection_token_id", "exactly 1 occurrence in the prompt", count
        )
    position = ids.index(meta.injection_token_id)
    left = ids[position - 1] if position > 0 else None
    right = ids[position + 1] if position + 1 < len(ids) else None
    if meta.left_neighbor_id is not None and left != meta.left_neighbor_id:
        raise mismatch(where, "tokens.injection_left_neighbor_id", meta.left_neighbor_id, left)
    if meta.right_neighbor_id is not None and right != meta.right_neighbor_id:
        raise mismatch(where, "tokens.injection_right_neighbor_id", meta.right_neighbor_id, right)
    return position


class Verbalizer:
    def __init__(self, model: nn.Module, tokenizer: Any, meta: AvMeta, ids: list[int], marker: int):
        self.model, self.tokenizer, self.meta = model, tokenizer, meta
        self.prompt = torch.tensor([ids], device=next(model.parameters()).device)
        self.marker = marker
        self._prefix: Any = None
        #: Generates from the injected embeddings when set (workers/nla/backends.py, e.g. vLLM);
        #: None: transformers here, after the shared prefix's KV cache.
        self.generator: Generator | None = None
        end = getattr(tokenizer, "eos_token_id", None)
        self.end_ids = frozenset([end] if isinstance(end, int) else [])

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        device: torch.device | None,
        dtype: torch.dtype,
        overrides: Overrides | None = None,
        load: LoadModel = load_causal_lm,
    ) -> Verbalizer:
        """The AV in `path`; `load` may hand out a model other sources (or the target) share."""
        where = str(path / SIDECAR)
        meta = parse_av(read_yaml(path), where, overrides)
        tokenizer = load_tokenizer(path)
        ids = prompt_ids(tokenizer, meta)
        marker = check_prompt(tokenizer, meta, ids, where)
        model = load(path, device, dtype)
        hidden = text_config(model.config).hidden_size
        if hidden != meta.d_model:
            raise mismatch(where, "d_model", hidden, meta.d_model)
        if meta.injection_layer >= len(decoder_layers(model)):
            raise mismatch(
                where,
                "extraction.injection_layer",
                f"< {len(decoder_layers(model))}",
                meta.injection_layer,
            )
        return cls(model, tokenizer, meta, ids, marker)

    def verbalize(
        self,
        vectors: torch.Tensor,
        settings: GenerationSettings,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[VerbalizedText]:
        """Explain each row of `vectors` `[B, d]` in one generation batch; `on_text(row, text)` streams."""
        if vectors.shape[-1] != self.meta.d_model:
            raise CheckpointIncompatible(
                f"The vector has {vectors.shape[-1]} dimensions; this AV expects {self.meta.d_model}."
            )
        injected = rescale(vectors, self.meta.injection_scale).to(self.prompt.device)
        decoded = self._generate(injected, self._spec(settings), on_text)
        return [self._result(d) for d in decoded]

    def verbalize_refill(
        self,
        next_vector: Callable[[], torch.Tensor | None],
        settings: GenerationSettings,
        *,
        slots: int,
        on_text: Callable[[int, str], None] | None = None,
        on_done: Callable[[list[tuple[int, VerbalizedText]]], None] | None = None,
    ) -> list[VerbalizedText]:
        """Explain vectors `[d]` as `next_vector` hands them out, at most `slots` at a time: a row
        that stops frees its slot for the next one at once (workers/nla/refill.py). Rows are
        numbered in the order they were handed out; `on_done` hears, once per decode step, the rows
        that stopped on it."""
        spec = self._spec(settings)

        def next_prompt() -> Prompt | None:
            vector = next_vector()
            return None if vector is None else self._prompt(vector)

        def done(finished: list[tuple[int, Decoded]]) -> None:
            if on_done is not None:
                on_done([(row, self._result(d)) for row, d in finished])

        decoded = generate_refill(
            self.model,
            self.tokenizer,
            spec,
            next_prompt,
            slots=slots,
            on_text=on_text,
            on_done=done,
            patch=self._patch,
        )
        return [self._result(d) for d in decoded]

    def can_refill(self) -> bool:
        """Slot refill pads KV caches, which sliding-window layers (Gemma 3) do not allow."""
        config = text_config(self.model.config)
        return not getattr(config, "sliding_window", None)

    def _prompt(self, vector: torch.Tensor) -> Prompt:
        """One row's prompt after the marker, behind its own copy of the prefix cache."""
        injected = rescale(vector[None], self.meta.injection_scale).to(self.prompt.device)
        rest, layer = self.prompt[:, self.marker :], self.meta.injection_layer
        if layer == 0:
            embeds = embeddings_with_injection(self.model, rest, 0, injected)
            return Prompt(inputs_embeds=embeds, cache=self.prefix_cache())
        return Prompt(input_ids=rest, cache=self.prefix_cache(), injected=injected)

    def _patch(self, prompts: list[Prompt]) -> AbstractContextManager[None]:
        """The block-output injection of the prompts' vectors, each into its own row; nothing
        for an AV fed at the embedding layer (the vector is in the prompt's embeddings)."""
        vectors = [p.injected for p in prompts if p.injected is not None]
        if not vectors:
            return contextlib.nullcontext()
        layer = self.meta.injection_layer
        return patched_block_output(self.model, layer, 0, torch.cat(vectors))

    def _spec(self, settings: GenerationSettings) -> DecodeSpec:
        return DecodeSpec(
            max_new_tokens=settings.max_new_tokens or self.meta.max_new_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
            stop_strings=self.meta.stop_strings,
            end_ids=self.end_ids,
        )

    def prefix_cache(self) -> Any:
        """A fresh copy of the KV cache of the prompt before the marker (None when the marker comes
        first). Every vector shares those tokens, so they are run once per process, not per row."""
        if self.marker == 0:
            return None
        if self._prefix is None:
            with torch.no_grad():
                out = self.model(input_ids=self.prompt[:, : self.marker], use_cache=True)
            self._prefix = out.cache
        return copy.deepcopy(self._prefix)

    def prompt_embeds(self, injected: torch.Tensor) -> list[torch.Tensor]:
        """The whole AV prompt as embeddings `[T, d]` per row of `injected` `[B, d]` (already
        rescaled), the marker's row overwritten: what a backend fed by embeddings receives."""
        whole = self.prompt.expand(injected.shape[0], -1)
        return list(embeddings_with_injection(self.model, whole, self.marker, injected))

    def _generate(
        self, injected: torch.Tensor, spec: DecodeSpec, on_text: Callable[[int, str], None] | None
    ) -> list[Decoded]:
        if self.generator is not None and self.meta.injection_layer == 0:
            return self.generator.from_embeds(self.prompt_embeds(injected), spec, on_text)
        batch = injected.shape[0]
        cache = self.prefix_cache()
        if cache is not None:
            cache.batch_repeat_interleave(batch)
        rest = self.prompt[:, self.marker :].expand(batch, -1)  # the marker is row 0 of `rest`
        run = partial(generate, self.model, self.tokenizer, spec, cache=cache, on_text=on_text)
        if self.meta.injection_layer == 0:
            return run(inputs_embeds=embeddings_with_injection(self.model, rest, 0, injected))
        with patched_block_output(self.model, self.meta.injection_layer, 0, injected):
            return run(input_ids=rest)

    def _result(self, decoded: Decoded) -> VerbalizedText:
        return VerbalizedText(
            text=extract_explanation(decoded.text),
            raw_text=decoded.text,
            truncated=not decoded.stopped,
        )
