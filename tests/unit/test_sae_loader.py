"""The SAE loader (workers/nla/sae.py) on hand-made SAELens directories: what it accepts, and one
sentence for each refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from workers.nla.sae import SAE_CONFIG, SAE_WEIGHTS, SaeRefused, load_sae, parse_config
from workers.source_config import parse_sources

D_IN, D_SAE, LAYER = 8, 5, 3


def write_sae(
    root: Path,
    cfg: dict[str, Any] | None = None,
    w_dec: np.ndarray | None = None,
    tensors: dict[str, np.ndarray] | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "architecture": "topk",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "k": 2,
        "metadata": {"hook_name": f"blocks.{LAYER}.hook_resid_post", "model_name": "tiny"},
    }
    config.update(cfg or {})
    (root / SAE_CONFIG).write_text(json.dumps(config), "utf-8")
    decoder = w_dec if w_dec is not None else np.arange(D_SAE * D_IN, dtype=np.float32)
    weights = {"W_dec": decoder.reshape(-1, D_IN) if w_dec is None else decoder}
    save_file(tensors if tensors is not None else weights, str(root / SAE_WEIGHTS))
    return root


def refusal(directory: Path, d_model: int = D_IN, layer: int = LAYER) -> str:
    with pytest.raises(SaeRefused) as caught:
        load_sae(str(directory), "tiny-src", d_model, layer)
    return str(caught.value)


def test_it_loads_the_decoder_rows_and_gives_unit_directions(tmp_path):
    sae = load_sae(str(write_sae(tmp_path / "sae")), "tiny-src", D_IN, LAYER)
    assert sae.W_dec.shape == (D_SAE, D_IN) and sae.config.k == 2
    row = np.arange(8, 16, dtype=np.float64)
    assert np.allclose(sae.direction(1), row / np.linalg.norm(row), atol=1e-6)
    assert sae.config.layer == LAYER and sae.config.model_name == "tiny"


def test_it_reads_the_older_flat_config_of_saelens():
    config = parse_config(
        {
            "d_in": 8,
            "d_sae": 5,
            "hook_name": "blocks.4.hook_resid_pre",
            "activation_fn_str": "relu",
        },
        "cfg.json",
    )
    assert config.layer == 3 and config.architecture == "relu" and config.k is None


def test_a_hook_layer_alone_means_that_blocks_output():
    assert parse_config({"d_in": 8, "d_sae": 5, "hook_layer": 6}, "cfg.json").layer == 6


def test_it_refuses_a_wrong_width_naming_both_numbers(tmp_path):
    message = refusal(write_sae(tmp_path / "sae"), d_model=576)
    assert message == (
        f"The SAE at {tmp_path / 'sae'} reads vectors of width d_in = 8, but the NLA source "
        "'tiny-src' explains width d_model = 576; attach an SAE of this model."
    )


def test_it_refuses_a_wrong_layer_naming_both_blocks(tmp_path):
    message = refusal(write_sae(tmp_path / "sae"), layer=8)
    assert message == (
        f"The SAE at {tmp_path / 'sae'} reads the output of block 3 (blocks.3.hook_resid_post), "
        "but the NLA source 'tiny-src' explains block 8; attach an SAE of layer 8."
    )


def test_resid_pre_of_the_next_block_is_the_same_layer(tmp_path):
    directory = write_sae(tmp_path / "sae", {"metadata": {"hook_name": "blocks.4.hook_resid_pre"}})
    assert load_sae(str(directory), "tiny-src", D_IN, LAYER).config.layer == LAYER


def test_it_refuses_a_hook_that_is_not_the_residual_stream(tmp_path):
    directory = write_sae(tmp_path / "sae", {"metadata": {"hook_name": "blocks.3.hook_mlp_out"}})
    assert "reads the hook 'blocks.3.hook_mlp_out', which is not the residual stream" in refusal(
        directory
    )


def test_it_refuses_the_embeddings(tmp_path):
    directory = write_sae(tmp_path / "sae", {"metadata": {"hook_name": "blocks.0.hook_resid_pre"}})
    assert "the token embeddings, which no NLA explains" in refusal(directory)


def test_it_refuses_a_config_without_a_layer(tmp_path):
    directory = write_sae(tmp_path / "sae", {"metadata": {}})
    assert refusal(directory).endswith(
        "names no layer: it needs 'hook_name' (e.g. blocks.8.hook_resid_post) or 'hook_layer'."
    )


def test_it_refuses_a_missing_directory(tmp_path):
    assert refusal(tmp_path / "nowhere") == (
        f"The SAE directory {tmp_path / 'nowhere'} of the source 'tiny-src' does not exist."
    )


def test_it_refuses_a_missing_config(tmp_path):
    directory = write_sae(tmp_path / "sae")
    (directory / SAE_CONFIG).unlink()
    assert refusal(directory) == f"The SAE directory {directory} has no cfg.json."


def test_it_refuses_a_missing_weights_file(tmp_path):
    directory = write_sae(tmp_path / "sae")
    (directory / SAE_WEIGHTS).unlink()
    assert refusal(directory) == f"The SAE directory {directory} has no sae_weights.safetensors."


def test_it_refuses_a_config_that_is_not_json(tmp_path):
    directory = write_sae(tmp_path / "sae")
    (directory / SAE_CONFIG).write_text("{d_in: 8", "utf-8")
    assert refusal(directory).startswith(f"{directory / SAE_CONFIG} is not valid JSON")


def test_it_refuses_a_config_without_a_width(tmp_path):
    directory = write_sae(tmp_path / "sae", {"d_in": "eight"})
    assert refusal(directory) == (
        f"{directory / SAE_CONFIG} needs a positive integer 'd_in', found 'eight'."
    )


def test_it_refuses_weights_without_a_decoder(tmp_path):
    directory = write_sae(tmp_path / "sae", tensors={"W_enc": np.zeros((D_IN, D_SAE), np.float32)})
    assert (
        refusal(directory) == f"{directory / SAE_WEIGHTS} has no tensor 'W_dec' (the decoder rows)."
    )


def test_it_refuses_a_transposed_decoder(tmp_path):
    directory = write_sae(tmp_path / "sae", w_dec=np.zeros((D_IN, D_SAE), np.float32))
    assert refusal(directory) == (
        f"{directory / SAE_WEIGHTS}: W_dec has shape [8, 5], but cfg.json says [d_sae, d_in] = [5, 8]."
    )


def test_it_refuses_nan_rows_naming_them(tmp_path):
    decoder = np.ones((D_SAE, D_IN), np.float32)
    decoder[1, 2] = np.nan
    decoder[4, 0] = np.inf
    directory = write_sae(tmp_path / "sae", w_dec=decoder)
    assert refusal(directory) == (
        f"{directory / SAE_WEIGHTS}: 2 of 5 decoder rows hold NaN or infinite values (rows 1, 4); "
        "the SAE's weights are damaged."
    )


def test_it_refuses_a_file_that_is_not_safetensors(tmp_path):
    directory = write_sae(tmp_path / "sae")
    (directory / SAE_WEIGHTS).write_bytes(b"not a safetensors file at all")
    assert refusal(directory).startswith(f"{directory / SAE_WEIGHTS} is not a readable safetensors")


def test_a_latent_out_of_range_or_without_direction_is_refused(tmp_path):
    decoder = np.ones((D_SAE, D_IN), np.float32)
    decoder[2] = 0
    sae = load_sae(str(write_sae(tmp_path / "sae", w_dec=decoder)), "tiny-src", D_IN, LAYER)
    with pytest.raises(SaeRefused, match=r"This SAE has latents 0 to 4; there is no latent 5\."):
        sae.direction(5)
    with pytest.raises(SaeRefused, match="Latent 2's decoder row is all zeros"):
        sae.direction(2)


def test_a_hub_id_that_is_not_in_the_cache_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SaeRefused) as caught:
        load_sae("nobody/no-such-sae@main#blocks.8", "tiny-src", D_IN, LAYER)
    assert str(caught.value).startswith(
        "The SAE 'nobody/no-such-sae@main#blocks.8' is neither a local directory nor a Hugging "
        "Face repository this machine can read"
    )


def test_the_sources_file_attaches_an_sae_to_a_source():
    (source,) = parse_sources(
        '[[source]]\nid = "s"\ntarget = "t"\nav = "a"\nar = "r"\nsae = "/data/sae-l8"\n'
    )
    assert source.sae == "/data/sae-l8"
    with pytest.raises(Exception, match="key 'sae' must be str"):
        parse_sources('[[source]]\nid = "s"\ntarget = "t"\nav = "a"\nar = "r"\nsae = 3\n')
