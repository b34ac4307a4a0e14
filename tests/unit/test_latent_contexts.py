"""`manage.py latent_contexts` on a tiny target and a hand-made ReLU SAE saved here: each latent's top
contexts are the tokens whose block-2 output (`output_hidden_states`) times its encoder column is
largest, stored beside the SAE with progress output; latents that have contexts are skipped unless
--force; a source without an SAE is refused with its sentence."""

from __future__ import annotations

import json
from dataclasses import replace
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command
from safetensors.numpy import save_file

from nlaweb.latents import attached as catalog
from nlaweb.sources import configured as web_sources
from tests.live import write_sources_file
from tests.tiny_models import D_MODEL, LAYER, build_tiny_source
from workers.nla.sae import SAE_CONFIG, SAE_CONTEXTS, SAE_WEIGHTS
from workers.nla.target import TargetModel
from workers.nla.types import ChatTurn

D_SAE = 3
TEXTS = ["My cat loves to sleep", "The dog runs in the park", "Paris is in France"]
KEPT = {"density": 0.5, "contexts": [{"before": "", "token": "kept", "after": "", "activation": 9}]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("latent-contexts")
    source = build_tiny_source(root / "tiny")
    encoder = np.random.default_rng(0).normal(size=(D_MODEL, D_SAE)).astype(np.float32)
    with_sae = replace(source, id="tiny-sae", sae=str(root / "sae"))
    without = replace(source, id="tiny-bare")
    return {
        "root": root,
        "sources": write_sources_file(root / "sources.toml", [with_sae, without]),
        "target": source.target,
        "encoder": encoder,
    }


@pytest.fixture
def sae_dir(tiny: dict[str, Any], settings) -> Path:
    """The hand-made SAE, written afresh (latent 0 already has contexts), and the sources file."""
    out: Path = tiny["root"] / "sae"
    out.mkdir(exist_ok=True)
    cfg = {
        "architecture": "standard",
        "d_in": D_MODEL,
        "d_sae": D_SAE,
        "metadata": {"hook_name": f"blocks.{LAYER}.hook_resid_post"},
    }
    (out / SAE_CONFIG).write_text(json.dumps(cfg), "utf-8")
    encoder = tiny["encoder"]
    weights = {
        "W_enc": encoder,
        "b_enc": np.zeros(D_SAE, np.float32),
        "b_dec": np.zeros(D_MODEL, np.float32),
        "W_dec": np.ascontiguousarray(encoder.T),
    }
    save_file(weights, str(out / SAE_WEIGHTS))
    (out / SAE_CONTEXTS).write_text(json.dumps({"latents": {"0": KEPT}}), "utf-8")
    settings.NLA_SOURCES_FILE, settings.NLA_DEVICE, settings.NLA_DTYPE = (
        tiny["sources"],
        "cpu",
        "float32",
    )
    web_sources.configured_sources.cache_clear()
    catalog.forget()
    yield out
    web_sources.configured_sources.cache_clear()
    catalog.forget()


def _run(*args: str) -> str:
    out = StringIO()
    call_command("latent_contexts", *args, stdout=out)
    return out.getvalue()


def _expected(tiny: dict[str, Any], latent: int) -> list[tuple[str, float]]:
    """(token, activation) of the latent's strongest positions ≥ 1, from output_hidden_states."""
    target = TargetModel.from_checkpoint(Path(tiny["target"]), torch.device("cpu"), torch.float32)
    found = []
    for text in TEXTS:
        tokens = target.tokenize([ChatTurn("user", text)])
        with torch.no_grad():
            out = target.model(torch.tensor([tokens.token_ids]), output_hidden_states=True)
        hidden = out.hidden_states[LAYER + 1][0].numpy()  # [0] is the embeddings
        acts = np.maximum(hidden @ tiny["encoder"][:, latent], 0)
        found += [(tokens.token_texts[p], float(acts[p])) for p in range(1, len(acts))]
    return sorted(found, key=lambda pair: -pair[1])


def test_it_stores_each_latents_top_contexts_and_keeps_those_already_computed(tiny, sae_dir):
    texts = tiny["root"] / "texts.json"
    texts.write_text(json.dumps(TEXTS), "utf-8")

    said = _run("tiny-sae", "--texts", str(texts), "--per-latent", "2")

    assert "2 of 3 latents to compute over 3 texts (1 skipped: they have contexts)" in said
    assert "latent contexts: capturing block-2 activations, text 0/3" in said
    assert "Contexts of 2 latents stored (1 kept as they were)" in said
    stored = json.loads((sae_dir / SAE_CONTEXTS).read_text("utf-8"))["latents"]
    assert stored["0"] == KEPT
    for latent in (1, 2):
        expected = _expected(tiny, latent)[:2]
        contexts = stored[str(latent)]["contexts"]
        assert [c["token"] for c in contexts] == [token for token, _ in expected]
        assert [c["activation"] for c in contexts] == pytest.approx(
            [v for _, v in expected], abs=1e-3
        )
    assert "All 3 latents have contexts" in _run("tiny-sae", "--texts", str(texts))


def test_force_computes_every_latent_again(tiny, sae_dir):
    texts = tiny["root"] / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n\n", "utf-8")
    said = _run("tiny-sae", "--texts", str(texts), "--per-latent", "1", "--force")
    assert "3 of 3 latents to compute over 3 texts (0 skipped" in said
    stored = json.loads((sae_dir / SAE_CONTEXTS).read_text("utf-8"))["latents"]
    top = _expected(tiny, 0)[0]
    [context] = stored["0"]["contexts"]
    assert (context["token"], context["activation"]) == (top[0], pytest.approx(top[1], abs=1e-3))


def test_a_source_without_an_sae_is_refused_with_its_sentence(sae_dir):
    with pytest.raises(CommandError, match="No SAE is attached to this source"):
        _run("tiny-bare")
    with pytest.raises(CommandError, match="There is no NLA source 'nowhere'"):
        _run("nowhere")
