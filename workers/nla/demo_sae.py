"""The demo SAE: a small TopK sparse autoencoder trained on CPU on the demo target's block-8 outputs,
written in the SAELens layout (workers/nla/sae.py) beside the demo NLA, with its training figures
(`training_figures.json`: held-out FVE, dead latents, L0) and its top-activating contexts
(`top_contexts.json`), both computed once here.

The texts are the demo corpus (workers/nla/demo_corpus.json) and the starter prompts, each
chat-templated as a user turn; every position but the first (an outlier norm) is a training token.
Seeded and deterministic (one thread of torch's CPU kernels decides nothing here: same inputs, same
order, same seed). The directory is written under a temporary name and renamed when complete, so a
later run sees it and skips the build.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import save_file

from workers.nla.capture import capture_block_output
from workers.nla.sae import SAE_CONFIG, SAE_CONTEXTS, SAE_FIGURES, SAE_WEIGHTS
from workers.nla.target import TargetModel
from workers.nla.types import ChatTurn

Progress = Callable[[str], None]
CONTEXT_BEFORE = 12  # tokens of context shown before the activating token
CONTEXT_AFTER = 4


@dataclass(frozen=True)
class SaePlan:
    """The demo SAE's size and training; the defaults are the quick start's."""

    d_sae: int = 1024
    k: int = 16
    steps: int = 600
    batch: int = 256
    lr: float = 2e-3
    heldout_fraction: float = 0.1
    top_contexts: int = 8
    seed: int = 0


@dataclass(frozen=True)
class Tokens:
    """Training tokens: `vectors` `[N, d]` float32, and for each its text (`doc`) and position."""

    vectors: torch.Tensor
    docs: list[int]
    positions: list[int]
    texts: list[list[str]]  # per text, the decoded token strings


def collect(
    target: TargetModel,
    texts: Sequence[str],
    layer: int,
    progress: Progress,
    what: str = "demo SAE",
) -> Tokens:
    """Block-`layer` outputs at every position ≥ 1 of each text chat-templated as a user turn
    (`what` names the work in the progress lines)."""
    rows, docs, positions, decoded = [], [], [], []
    for doc, text in enumerate(texts):
        if doc % 40 == 0:
            progress(f"{what}: capturing block-{layer} activations, text {doc}/{len(texts)}")
        tokenized = target.tokenize([ChatTurn("user", text)])
        ids = torch.tensor([tokenized.token_ids], device=target.device)
        hidden = capture_block_output(target.model, ids, layer)[0].cpu()
        rows.append(hidden[1:])
        docs += [doc] * (hidden.shape[0] - 1)
        positions += list(range(1, hidden.shape[0]))
        decoded.append(list(tokenized.token_texts))
    return Tokens(torch.cat(rows), docs, positions, decoded)


@dataclass(frozen=True)
class TopK:
    """A trained TopK SAE in raw activation units (SAELens' `topk` architecture).

    `W_enc` `[d_in, d_sae]`, `b_enc` `[d_sae]`, `W_dec` `[d_sae, d_in]` with unit rows, `b_dec` `[d_in]`."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    k: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, d_sae]` latent activations of `[N, d_in]` inputs: the k largest pre-activations, ReLU'd."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        return acts @ self.W_dec + self.b_dec

    @property
    def d_sae(self) -> int:
        return int(self.W_dec.shape[0])


class Encoder(Protocol):
    """What the top-context search needs of an SAE (TopK here, any SAELens SAE's encoder in
    workers/nla/sae_contexts.py)."""

    @property
    def d_sae(self) -> int: ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...


def train_topk(vectors: torch.Tensor, plan: SaePlan, progress: Progress) -> TopK:
    """Train on `[N, d]` vectors scaled to mean norm √d (folded back into raw units at the end),
    decoder rows kept at unit norm, encoder initialised as the decoder's transpose."""
    generator = torch.Generator().manual_seed(plan.seed)
    d = vectors.shape[1]
    scale = float(vectors.norm(dim=1).mean()) / math.sqrt(d)
    x = vectors / scale
    w_dec = torch.randn(plan.d_sae, d, generator=generator)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    params = {
        "W_dec": w_dec.clone().requires_grad_(),
        "W_enc": w_dec.T.clone().requires_grad_(),
        "b_enc": torch.zeros(plan.d_sae, requires_grad=True),
        "b_dec": x.mean(0).clone().requires_grad_(),
    }
    optimizer = torch.optim.Adam(params.values(), lr=plan.lr)
    baseline = float(((x - x.mean(0)) ** 2).sum(1).mean())
    for step in range(plan.steps):
        batch = x[torch.randint(0, x.shape[0], (plan.batch,), generator=generator)]
        sae = TopK(params["W_enc"], params["b_enc"], params["W_dec"], params["b_dec"], plan.k)
        loss = ((sae.decode(sae.encode(batch)) - batch) ** 2).sum(1).mean() / baseline
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True)
        if (step + 1) % max(1, plan.steps // 10) == 0:
            progress(
                f"demo SAE: step {step + 1}/{plan.steps}, training FVE {1 - float(loss.detach()):.3f}"
            )
    p = {name: value.detach() for name, value in params.items()}
    return TopK(p["W_enc"], p["b_enc"] * scale, p["W_dec"], p["b_dec"] * scale, plan.k)


def figures(sae: TopK, heldout: torch.Tensor, everything: torch.Tensor) -> dict[str, Any]:
    """Held-out FVE and L0, and the latents that never fire on any token (train and held out)."""
    with torch.no_grad():
        acts = sae.encode(heldout)
        error = ((sae.decode(acts) - heldout) ** 2).sum()
        variance = ((heldout - heldout.mean(0)) ** 2).sum()
        fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.bool)
        for start in range(0, everything.shape[0], 2048):
            chunk = everything[start : start + 2048]
            fired |= (sae.encode(chunk) > 0).any(0)
    return {
        "heldout_fve": round(1 - float(error / variance), 4),
        "heldout_l0": round(float((acts > 0).sum(1).float().mean()), 2),
        "dead_latents": int((~fired).sum()),
        "dead_fraction": round(float((~fired).float().mean()), 4),
    }


def top_contexts(
    sae: Encoder, tokens: Tokens, per_latent: int, latents: Sequence[int] | None = None
) -> dict[str, Any]:
    """Latent index → its `per_latent` strongest tokens (text before, token, text after, activation),
    and how often it fires; for the `latents` named (default: all)."""
    wanted = torch.tensor(list(range(sae.d_sae)) if latents is None else list(latents))
    values, where, counts = [], [], torch.zeros(len(wanted))
    with torch.no_grad():
        for start in range(0, tokens.vectors.shape[0], 2048):
            acts = sae.encode(tokens.vectors[start : start + 2048])[:, wanted]
            counts += (acts > 0).sum(0)
            top = acts.topk(min(per_latent, acts.shape[0]), dim=0)
            values.append(top.values)
            where.append(top.indices + start)
    all_values, all_where = torch.cat(values), torch.cat(where)
    best = all_values.topk(min(per_latent, all_values.shape[0]), dim=0)
    found: dict[str, Any] = {}
    for column, latent in enumerate(wanted.tolist()):
        rows = []
        for rank in range(best.values.shape[0]):
            value = float(best.values[rank, column])
            if value <= 0:
                break
            rows.append(_context(tokens, int(all_where[best.indices[rank, column], column]), value))
        density = float(counts[column]) / tokens.vectors.shape[0]
        found[str(latent)] = {"density": round(density, 5), "contexts": rows}
    return found


def _context(tokens: Tokens, row: int, value: float) -> dict[str, Any]:
    text, position = tokens.texts[tokens.docs[row]], tokens.positions[row]
    return {
        "before": "".join(text[max(0, position - CONTEXT_BEFORE) : position]),
        "token": text[position],
        "after": "".join(text[position + 1 : position + 1 + CONTEXT_AFTER]),
        "activation": round(value, 3),
        "text": tokens.docs[row],
        "position": position,
    }


def write_sae(out: Path, sae: TopK, layer: int, model_name: str) -> None:
    """`cfg.json` and `sae_weights.safetensors` as SAELens 6 writes a `topk` SAE."""
    d_sae, d_in = sae.W_dec.shape
    cfg = {
        "architecture": "topk",
        "d_in": d_in,
        "d_sae": d_sae,
        "k": sae.k,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": model_name,
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_layer": layer,
            "trained_by": "nlaweb prepare_demo (workers/nla/demo_sae.py)",
        },
    }
    (out / SAE_CONFIG).write_text(json.dumps(cfg, indent=2), "utf-8")
    weights = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    save_file({k: v.contiguous().float() for k, v in weights.items()}, str(out / SAE_WEIGHTS))


def is_built(directory: Path) -> bool:
    return all((directory / name).is_file() for name in (SAE_CONFIG, SAE_WEIGHTS, SAE_FIGURES))


def build_sae(
    out: Path,
    target: TargetModel,
    texts: Sequence[str],
    layer: int,
    model_name: str,
    plan: SaePlan = SaePlan(),
    progress: Progress = print,
) -> dict[str, Any]:
    """Train the SAE on `texts` and write it with its figures and contexts to `out` (atomically);
    returns the figures."""
    began = time.monotonic()
    tokens = collect(target, texts, layer, progress)
    cut = int(tokens.vectors.shape[0] * (1 - plan.heldout_fraction))
    progress(
        f"demo SAE: training a TopK SAE (d_sae {plan.d_sae}, k {plan.k}) on {cut} tokens, "
        f"holding out {tokens.vectors.shape[0] - cut}"
    )
    torch.manual_seed(plan.seed)
    sae = train_topk(tokens.vectors[:cut], plan, progress)
    norms = tokens.vectors.norm(dim=1)
    result = {
        **figures(sae, tokens.vectors[cut:], tokens.vectors),
        "activation_norm_median": round(float(norms.median()), 3),
        "tokens_train": cut,
        "tokens_heldout": tokens.vectors.shape[0] - cut,
        "texts": len(texts),
        "layer": layer,
        "plan": asdict(plan),
        "corpus": "the demo corpus (Python docstrings) and the starter prompts, chat-templated",
    }
    progress("demo SAE: finding each latent's top-activating contexts")
    contexts = {"latents": top_contexts(sae, tokens, plan.top_contexts), "texts": len(texts)}
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_sae(tmp, sae, layer, model_name)
    (tmp / SAE_CONTEXTS).write_text(json.dumps(contexts), "utf-8")
    result["build_seconds"] = round(time.monotonic() - began, 1)
    (tmp / SAE_FIGURES).write_text(json.dumps(result, indent=2), "utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return result


def summary(result: dict[str, Any]) -> str:
    return (
        f"held-out FVE {result['heldout_fve']:.2f}, L0 {result['heldout_l0']:.1f}, "
        f"{result['dead_latents']} of {result['plan']['d_sae']} latents dead"
    )


def build_demo_sae(data_dir: Path, progress: Progress = print, plan: SaePlan = SaePlan()) -> str:
    """Build the demo SAE beside the demo NLA unless it is there; returns a one-line summary."""
    from workers.nla.demo import BASE_MODEL, LAYER
    from workers.source_config import demo_paths, demo_sae_path

    out = demo_sae_path(data_dir)
    if is_built(out):
        progress(f"demo SAE present: {out}")
        return summary(json.loads((out / SAE_FIGURES).read_text("utf-8")))
    texts = demo_sae_texts()
    target = TargetModel.from_checkpoint(
        demo_paths(data_dir)[0], torch.device("cpu"), torch.float32
    )
    result = build_sae(out, target, texts, LAYER, BASE_MODEL, plan, progress)
    progress(f"demo SAE written to {out}: {summary(result)} ({result['build_seconds']} s)")
    return summary(result)


def demo_sae_texts() -> list[str]:
    """The demo SAE's corpus: the demo corpus's texts and the starter prompts."""
    from workers.nla.demo_corpus import CORPUS, docstrings

    return docstrings(len(json.loads(CORPUS.read_text("utf-8"))["texts"])) + list(starter_texts())


def starter_texts() -> tuple[str, ...]:
    """The starter prompts (kept here as text: nlaweb's module is the web's, not the worker's)."""
    return (
        "What is the capital of France?",
        "Name three animals that live on a farm.",
        "Write a haiku about the ocean.",
        "What is photosynthesis?",
        "Describe a rainy afternoon in Paris.",
        "Explain how a bicycle works.",
        "Write a haiku about a cat on a windowsill.",
    )
