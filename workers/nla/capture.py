"""Residual-stream capture: the output of decoder block K (= `output_hidden_states[K+1]`), read by a
forward hook that stops the forward pass there, so deeper blocks never run."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.nla.loading import decoder_layers


class _StopForward(Exception):
    """Raised by the capture hook once block K has run."""


def capture_block_output(
    model: nn.Module,
    input_ids: torch.Tensor,
    layer: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`[B, T, d]` float32: the output of block `layer` for `input_ids` `[B, T]`; blocks > layer skipped."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        captured.append(hidden.detach())
        raise _StopForward

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"block {layer} never ran")
    return captured[0].float()
