"""The demo SAE build (workers/nla/demo_sae.py) on a tiny model: the SAELens layout the loader reads,
honest figures, top contexts that are the real maxima, the same files twice, a skip when built."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import CORPUS, D_MODEL, LAYER, build_tiny_source
from workers.nla.demo_sae import SaePlan, TopK, build_demo_sae, build_sae, collect
from workers.nla.loading import load_causal_lm, load_tokenizer
from workers.nla.sae import SAE_CONTEXTS, SAE_FIGURES, SAE_WEIGHTS, load_sae
from workers.nla.target import TargetModel
from workers.source_config import demo_sae_path

PLAN = SaePlan(d_sae=48, k=4, steps=150, batch=32, top_contexts=3)
TEXTS = CORPUS * 3


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> TargetModel:
    root = tmp_path_factory.mktemp("tiny")
    source = build_tiny_source(root)
    path = Path(source.target)
    return TargetModel(
        load_causal_lm(path, torch.device("cpu"), torch.float32), load_tokenizer(path)
    )


@pytest.fixture(scope="module")
def built(target: TargetModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sae") / "sae"
    return out, build_sae(out, target, TEXTS, LAYER, "tiny", PLAN, progress=lambda line: None)


def test_topk_keeps_the_k_largest_pre_activations_relud():
    sae = TopK(torch.eye(3), torch.tensor([0.0, 0.0, -5.0]), torch.eye(3), torch.zeros(3), k=2)
    acts = sae.encode(torch.tensor([[3.0, -1.0, 4.0]]))
    # pre-activations 3, -1, -1: the top two are 3 and a -1, which the ReLU zeroes
    assert acts.tolist() == [[3.0, 0.0, 0.0]]
    wide = TopK(torch.eye(3), torch.zeros(3), torch.eye(3), torch.zeros(3), k=2)
    assert wide.encode(torch.tensor([[3.0, 1.0, 4.0]])).tolist() == [[3.0, 0.0, 4.0]]
    assert sae.decode(acts).tolist() == [[3.0, 0.0, 0.0]]


def test_the_build_writes_an_sae_the_loader_accepts(built):
    out, figures = built
    sae = load_sae(str(out), "tiny", D_MODEL, LAYER)
    assert sae.W_dec.shape == (PLAN.d_sae, D_MODEL) and sae.config.k == PLAN.k
    assert sae.config.hook_name == f"blocks.{LAYER}.hook_resid_post"
    norms = torch.as_tensor(sae.W_dec).norm(dim=1)
    assert torch.allclose(norms, torch.ones(PLAN.d_sae), atol=1e-5)
    assert json.loads((out / SAE_FIGURES).read_text()) == figures


def test_its_figures_are_measured_on_held_out_tokens(built, target):
    out, figures = built
    weights = load_file(str(out / SAE_WEIGHTS))
    sae = TopK(weights["W_enc"], weights["b_enc"], weights["W_dec"], weights["b_dec"], PLAN.k)
    tokens = collect(target, TEXTS, LAYER, progress=lambda line: None)
    heldout = tokens.vectors[figures["tokens_train"] :]
    error = ((sae.decode(sae.encode(heldout)) - heldout) ** 2).sum()
    fve = 1 - float(error / ((heldout - heldout.mean(0)) ** 2).sum())
    assert figures["heldout_fve"] == pytest.approx(fve, abs=1e-3)
    assert 0.5 < figures["heldout_fve"] <= 1.0  # it learned something
    assert 0 < figures["heldout_l0"] <= PLAN.k
    fired = (sae.encode(tokens.vectors) > 0).any(0)
    assert figures["dead_latents"] == int((~fired).sum())
    assert figures["activation_norm_median"] == pytest.approx(
        float(tokens.vectors.norm(dim=1).median()), abs=1e-2
    )


def test_the_top_contexts_are_each_latents_strongest_tokens(built, target):
    out, _ = built
    weights = load_file(str(out / SAE_WEIGHTS))
    sae = TopK(weights["W_enc"], weights["b_enc"], weights["W_dec"], weights["b_dec"], PLAN.k)
    tokens = collect(target, TEXTS, LAYER, progress=lambda line: None)
    acts = sae.encode(tokens.vectors)
    contexts = json.loads((out / SAE_CONTEXTS).read_text())["latents"]
    latent = int(acts.max(0).values.argmax())
    best = contexts[str(latent)]["contexts"]
    assert best[0]["activation"] == pytest.approx(float(acts[:, latent].max()), abs=1e-3)
    assert [c["activation"] for c in best] == sorted((c["activation"] for c in best), reverse=True)
    row = int(acts[:, latent].argmax())
    assert best[0]["token"] == tokens.texts[tokens.docs[row]][tokens.positions[row]]
    fires = float((acts[:, latent] > 0).float().mean())
    assert contexts[str(latent)]["density"] == pytest.approx(fires, abs=1e-4)


def test_two_builds_write_the_same_weights(built, target, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    build_sae(again, target, TEXTS, LAYER, "tiny", PLAN, progress=lambda line: None)
    first, second = load_file(str(out / SAE_WEIGHTS)), load_file(str(again / SAE_WEIGHTS))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_built_demo_sae_is_skipped(built, tmp_path):
    out, figures = built
    target = demo_sae_path(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copytree(out, target)
    lines: list[str] = []
    summary = build_demo_sae(tmp_path, progress=lines.append)  # no demo target here: nothing loads
    assert lines == [f"demo SAE present: {target}"]
    assert summary.startswith(f"held-out FVE {figures['heldout_fve']:.2f}")
