"""Weights in the worker's dtype (float32 on CPU, bfloat16 on CUDA by default, NLA_DTYPE to choose);
activations and scores always in float32."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import build_tiny_source
from workers.nla.engine import NlaEngine
from workers.nla.errors import ModelLoadError
from workers.nla.loading import resolve_dtype
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress


@pytest.fixture(scope="module")
def bf16_engine(tmp_path_factory: pytest.TempPathFactory) -> NlaEngine:
    source = build_tiny_source(tmp_path_factory.mktemp("bf16"))
    return NlaEngine.load(source, device="cpu", dtype="bfloat16")


def test_the_default_dtype_is_float32_on_cpu_and_bfloat16_on_cuda():
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16


def test_an_unknown_dtype_is_refused_with_the_choices():
    with pytest.raises(ModelLoadError, match="NLA_DTYPE must be one of float32, bfloat16, float16"):
        resolve_dtype("int8", torch.device("cpu"))


def test_bfloat16_weights_still_give_float32_activations_and_scores(bf16_engine):
    assert bf16_engine.target.model.dtype == torch.bfloat16
    assert bf16_engine.verbalizer.model.dtype == torch.bfloat16
    assert bf16_engine.reconstructor.model.dtype == torch.bfloat16
    tokens = bf16_engine.tokenize([ChatTurn("user", "My cat loves to sleep")]).token_ids
    vectors = bf16_engine.capture(tokens, [3, 5])
    assert vectors.dtype == torch.float32
    predicted = bf16_engine.reconstructor.predict(["a cat"])
    assert predicted.dtype == torch.float32
    [result] = bf16_engine.explain(tokens, [5], GenerationSettings(), NoProgress())
    assert 0.0 <= result.fidelity.mse <= 4.0 and -1.0 <= result.fidelity.cosine <= 1.0
    assert result.l2_norm == pytest.approx(float(vectors[1].norm()), rel=1e-6)
