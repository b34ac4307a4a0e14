"""The activation verbalizer (AV): vectors in, explanations out, one generation batch per request."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.nla.decode import Decoded, DecodeSpec, generate
from workers.nla.errors import CheckpointIncompatible, mismatch
from workers.nla.inject import embeddings_with_injection, patched_block_output, rescale
from workers.nla.loading import decoder_layers, load_causal_lm, load_tokenizer, text_config
from workers.nla.sidecar import SIDECAR, AvMeta, Overrides, parse_av, read_yaml
from workers.nla.types import GenerationSettings, VerbalizedText

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
        end = getattr(tokenizer, "eos_token_id", None)
        self.end_ids = frozenset([end] if isinstance(end, int) else [])

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        device: torch.device | None,
        dtype: torch.dtype,
        overrides: Overrides | None = None,
    ) -> Verbalizer:
        where = str(path / SIDECAR)
        meta = parse_av(read_yaml(path), where, overrides)
        tokenizer = load_tokenizer(path)
        ids = prompt_ids(tokenizer, meta)
        marker = check_prompt(tokenizer, meta, ids, where)
        model = load_causal_lm(path, device, dtype)
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
        spec = DecodeSpec(
            max_new_tokens=settings.max_new_tokens or self.meta.max_new_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
            stop_strings=self.meta.stop_strings,
            end_ids=self.end_ids,
        )
        decoded = self._generate(injected, spec, on_text)
        return [self._result(d) for d in decoded]

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

    def _generate(
        self, injected: torch.Tensor, spec: DecodeSpec, on_text: Callable[[int, str], None] | None
    ) -> list[Decoded]:
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
