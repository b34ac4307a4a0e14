"""The activation reconstructor (AR): explanation texts in, predicted activations out.

Its trunk is the target truncated to blocks 0..K (final norm unused: we read block K's output), read
at the last token of the raw (not chat-templated) prompt, then `value_head` (`[d, d]`, no bias)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from workers.nla.capture import capture_block_output
from workers.nla.errors import CheckpointIncompatible, mismatch
from workers.nla.loading import load_base_model, load_tokenizer, text_config
from workers.nla.sidecar import SIDECAR, ArMeta, Overrides, parse_ar, read_yaml

VALUE_HEAD = "value_head.safetensors"
_PROBE = "probe"


def load_value_head(path: Path, d_model: int) -> torch.Tensor:
    """`[d, d]` float32 from `value_head.safetensors` (key `weight`)."""
    file = path / VALUE_HEAD
    if not file.is_file():
        raise CheckpointIncompatible(f"{path} has no {VALUE_HEAD}: it is not an NLA reconstructor.")
    tensors = load_file(str(file))
    if "weight" not in tensors:
        raise mismatch(str(file), "weight", "a tensor named 'weight'", sorted(tensors))
    weight = tensors["weight"]
    if tuple(weight.shape) != (d_model, d_model):
        raise mismatch(str(file), "weight.shape", (d_model, d_model), tuple(weight.shape))
    return weight.float()


class Reconstructor:
    def __init__(self, model: nn.Module, tokenizer: Any, value_head: torch.Tensor, meta: ArMeta):
        self.model, self.tokenizer, self.meta = model, tokenizer, meta
        self.value_head = value_head.to(next(model.parameters()).device)

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        device: torch.device | None,
        dtype: torch.dtype,
        overrides: Overrides | None = None,
    ) -> Reconstructor:
        where = str(path / SIDECAR)
        meta = parse_ar(read_yaml(path), where, overrides)
        tokenizer = load_tokenizer(path)
        _check_suffix(tokenizer, meta, where)
        model = load_base_model(path, device, dtype)
        config = text_config(model.config)
        if config.num_hidden_layers != meta.layer + 1:
            raise mismatch(
                where, "ar.num_hidden_layers", f"{meta.layer + 1} (K + 1)", config.num_hidden_layers
            )
        if config.hidden_size != meta.d_model:
            raise mismatch(where, "d_model", config.hidden_size, meta.d_model)
        return cls(model, tokenizer, load_value_head(path, meta.d_model), meta)

    def prompts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each AR prompt (raw string, special tokens added: BOS matters)."""
        filled = [self.meta.template.replace("{explanation}", t) for t in texts]
        return [list(ids) for ids in self.tokenizer(filled, add_special_tokens=True)["input_ids"]]

    def predict(self, texts: Sequence[str]) -> torch.Tensor:
        """`[B, d]` float32: the value head applied to block K's output at each prompt's last token."""
        prompts = self.prompts(texts)
        width = max(len(p) for p in prompts)
        device = self.value_head.device
        ids = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):  # right padding: causal rows never see the pads
            ids[row, : len(prompt)] = torch.tensor(prompt, device=device)
            mask[row, : len(prompt)] = 1
        hidden = capture_block_output(self.model, ids, self.meta.layer, attention_mask=mask)
        rows = torch.arange(len(prompts), device=hidden.device)
        last = torch.tensor([len(p) - 1 for p in prompts], device=hidden.device)
        final = hidden[rows, last].to(device)  # block K may sit on another GPU when sharded
        return final @ self.value_head.T


def _check_suffix(tokenizer: Any, meta: ArMeta, where: str) -> None:
    if meta.suffix_ids is None:
        return
    filled = meta.template.replace("{explanation}", _PROBE)
    ids = list(tokenizer(filled, add_special_tokens=True)["input_ids"])
    tail = tuple(ids[-len(meta.suffix_ids) :])
    if tail != meta.suffix_ids:
        raise mismatch(where, "tokens.critic_suffix_ids", list(meta.suffix_ids), list(tail))
