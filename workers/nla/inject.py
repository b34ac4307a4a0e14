"""Putting an activation into the AV (../shared/NLA.md §3): rescale it to a fixed norm, then overwrite
one row, either of the prompt's input embeddings (published checkpoints) or of a block's output during
the prefill (our `extraction.injection_layer` extension, Patchscopes-style)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from workers.nla.loading import decoder_layers

NORM_FLOOR = 1e-12


def rescale(vectors: torch.Tensor, scale: float | None) -> torch.Tensor:
    """`[B, d]` float32: each row times `scale / max(‖row‖₂, 1e-12)`; `scale` None leaves rows raw."""
    vectors = vectors.float()
    if scale is None:
        return vectors
    norms = vectors.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
    scaled: torch.Tensor = vectors * (scale / norms)
    return scaled


def embeddings_with_injection(
    model: nn.Module, input_ids: torch.Tensor, position: int, vectors: torch.Tensor
) -> torch.Tensor:
    """`[B, T, d]` in the model's dtype: the prompt's input embeddings (with the architecture's own
    scale, e.g. √d for Gemma) with row `position` of each batch row overwritten by `vectors[b]` as
    given (the embedding scale is not applied to the injected vector)."""
    with torch.no_grad():
        embeds: torch.Tensor = model.get_input_embeddings()(input_ids).clone()  # type: ignore[operator]
    embeds[:, position] = vectors.to(embeds.device, embeds.dtype)
    return embeds


@contextmanager
def patched_block_output(
    model: nn.Module, layer: int, position: int, vectors: torch.Tensor
) -> Iterator[None]:
    """While active, the output of block `layer` at `position` (an index into the pass's own tokens)
    is replaced by `vectors` `[B, d]` in the first forward pass (the prefill); later passes (decode
    steps) go through untouched."""
    pending = [True]

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if not pending:
            return output
        pending.clear()
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, position] = vectors.to(hidden.device, hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
