"""Loading checkpoints: multimodal Gemma-3 directories (text decoder inside `language_model`) and
weights files that do not match their config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.tiny_models import build_tokenizer
from workers.nla.errors import ModelLoadError
from workers.nla.loading import decoder_layers, load_base_model, load_causal_lm, resolve_device
from workers.nla.target import TargetModel
from workers.nla.types import ChatTurn

LAYER = 1


def _multimodal_gemma(directory: Path):  # type: ignore[no-untyped-def]
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokenizer = build_tokenizer()
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=16,
    )
    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = Gemma3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


def test_a_multimodal_gemma3_target_captures_its_text_decoders_residual_stream(tmp_path):
    reference = _multimodal_gemma(tmp_path)
    target = TargetModel.from_checkpoint(tmp_path, torch.device("cpu"), torch.float32)
    assert len(decoder_layers(target.model)) == 3
    tokens = target.tokenize([ChatTurn("user", "My cat loves to sleep")]).token_ids
    captured = target.capture(tokens, LAYER)
    with torch.no_grad():
        hidden = reference(torch.tensor([tokens]), output_hidden_states=True).hidden_states
    assert torch.equal(captured, hidden[LAYER + 1][0])


def test_weights_that_lack_tensors_of_the_architecture_are_refused(tmp_path):
    _multimodal_gemma(tmp_path)
    weights = tmp_path / "model.safetensors"
    tensors = load_file(str(weights))
    dropped = next(k for k in tensors if "layers.1.self_attn.q_proj" in k)
    del tensors[dropped]
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"lack 1 tensor\(s\) its config.json needs"):
        load_causal_lm(tmp_path, torch.device("cpu"), torch.float32)
    with pytest.raises(ModelLoadError, match=r"layers\.1\.self_attn\.q_proj"):
        load_base_model(tmp_path, torch.device("cpu"), torch.float32)


def test_auto_placement_loads_and_gives_what_a_single_device_engine_gives(tmp_path):
    """NLA_DEVICE=auto hands placement to accelerate's device_map; on this CPU-only machine it puts
    every block on the CPU, so this pins the code path, not a real split over GPUs."""
    from tests.tiny_models import build_tiny_source
    from workers.nla.engine import NlaEngine
    from workers.nla.types import GenerationSettings, NoProgress

    source = build_tiny_source(tmp_path)
    single = NlaEngine.load(source, device="cpu", dtype="float32")
    assert resolve_device("auto") is None
    sharded = NlaEngine.load(source, device="auto", dtype="float32")
    tokens = single.tokenize([ChatTurn("user", "My cat loves to sleep")]).token_ids
    positions = [4, 6, 8]
    expected = single.explain(tokens, positions, GenerationSettings(), NoProgress())
    found = sharded.explain(tokens, positions, GenerationSettings(), NoProgress())
    assert [r.text for r in found] == [r.text for r in expected]
    assert [r.fidelity.mse for r in found] == pytest.approx([r.fidelity.mse for r in expected])
