"""Top-activating contexts of an attached SAE's latents over a corpus of texts (`manage.py
latent_contexts`), merged into `top_contexts.json` beside the SAE, where the latents page reads them.

The SAE's encoder is read in the SAELens layout (`W_enc` `[d_in, d_sae]`, `b_enc`, `b_dec`, and
`threshold` for JumpReLU; `architecture` and `k` from `cfg.json`), and runs over the source target's
block outputs at the SAE's layer, each text chat-templated as a user turn as the demo build does
(workers/nla/demo_sae.py, whose context format and search this shares). Latents that already have
contexts keep them unless asked to compute them again. Django-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from workers.nla.demo_sae import Progress, collect, top_contexts
from workers.nla.sae import SAE_CONFIG, SAE_CONTEXTS, SAE_WEIGHTS, SaeConfig, SaeRefused
from workers.nla.target import TargetModel


@dataclass(frozen=True)
class SaeEncoder:
    """An SAE's encoder in raw activation units: `W_enc` `[d_in, d_sae]`, `b_enc` `[d_sae]`,
    `b_dec` `[d_in]` (subtracted from the input first when `apply_b_dec_to_input`), and for JumpReLU
    its `threshold` `[d_sae]`."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    b_dec: torch.Tensor
    architecture: str
    k: int | None = None
    threshold: torch.Tensor | None = None
    apply_b_dec_to_input: bool = True

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, d_sae]` latent activations of `[N, d_in]` inputs."""
        pre = (x - self.b_dec if self.apply_b_dec_to_input else x) @ self.W_enc + self.b_enc
        if self.k is not None and self.architecture == "topk":
            top = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        if self.threshold is not None and self.architecture == "jumprelu":
            return pre * (pre > self.threshold)
        return pre.relu()


def read_encoder(directory: Path, config: SaeConfig) -> SaeEncoder:
    """The encoder of the SAE in `directory`; SaeRefused (one sentence) when a tensor is missing or
    of another shape."""
    from safetensors.torch import load_file

    weights = load_file(str(directory / SAE_WEIGHTS))
    missing = [name for name in ("W_enc", "b_enc", "b_dec") if name not in weights]
    if missing:
        raise SaeRefused(
            f"{directory / SAE_WEIGHTS} has no {', '.join(missing)}: top contexts need the "
            "encoder, not only the decoder rows."
        )
    if tuple(weights["W_enc"].shape) != (config.d_in, config.d_sae):
        raise SaeRefused(
            f"{directory / SAE_WEIGHTS}: W_enc has shape {list(weights['W_enc'].shape)}, but "
            f"cfg.json says [d_in, d_sae] = {[config.d_in, config.d_sae]}."
        )
    doc = json.loads((directory / SAE_CONFIG).read_text("utf-8"))
    threshold = weights.get("threshold")
    return SaeEncoder(
        weights["W_enc"].float(),
        weights["b_enc"].float(),
        weights["b_dec"].float(),
        config.architecture,
        config.k,
        threshold.float() if threshold is not None else None,
        bool(doc.get("apply_b_dec_to_input", True)),
    )


def read_texts(path: Path) -> list[str]:
    """A corpus file: a JSON list of strings or `{"texts": [...]}` (`.json`), else one text a line
    (blank lines skipped)."""
    raw = path.read_text("utf-8")
    if path.suffix != ".json":
        return [line.strip() for line in raw.splitlines() if line.strip()]
    doc = json.loads(raw)
    texts = doc.get("texts") if isinstance(doc, dict) else doc
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f'{path} is neither a JSON list of strings nor {{"texts": [...]}}.')
    return [t for t in texts if t.strip()]


def stored_contexts(directory: Path) -> dict[str, Any]:
    """Latent index (str) → its stored density and contexts (empty without a file)."""
    path = directory / SAE_CONTEXTS
    doc = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    latents = doc.get("latents") if isinstance(doc, dict) else None
    return latents if isinstance(latents, dict) else {}


@dataclass(frozen=True)
class ContextsReport:
    computed: int
    kept: int
    texts: int
    tokens: int


def compute_contexts(
    directory: Path,
    config: SaeConfig,
    target: TargetModel,
    texts: Sequence[str],
    per_latent: int,
    todo: Sequence[int],
    progress: Progress,
) -> ContextsReport:
    """Contexts of the latents `todo` over `texts`, merged into the SAE's `top_contexts.json` (a
    complete file replaces the old one atomically); other latents keep what they had."""
    encoder = read_encoder(directory, config)
    tokens = collect(target, texts, config.layer, progress, what="latent contexts")
    tokens = replace(tokens, vectors=tokens.vectors.float())  # a bfloat16 target's, on the CPU
    progress(f"latent contexts: encoding {tokens.vectors.shape[0]} tokens")
    with torch.no_grad():
        found = top_contexts(encoder, tokens, per_latent, todo)
    latents = {**stored_contexts(directory), **found}
    doc = {"latents": latents, "texts": len(texts)}
    partial = directory / (SAE_CONTEXTS + ".partial")
    partial.write_text(json.dumps(doc), "utf-8")
    os.replace(partial, directory / SAE_CONTEXTS)
    return ContextsReport(
        len(found), len(latents) - len(found), len(texts), tokens.vectors.shape[0]
    )
