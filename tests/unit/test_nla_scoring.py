"""The AR score: value head on block K's output at the last prompt token, normalised MSE, cosine,
FVE, relative MSE and the confidence pill, against values computed by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from tests.tiny_models import AR_TEMPLATE, D_MODEL, LAYER, VAR_BASELINE, build_tiny_source
from workers.nla.engine import NlaEngine
from workers.nla.scoring import confidence, fidelities
from workers.nla.types import ChatTurn
from workers.source_config import SourceConfig

TEXTS = [
    "A cat is a small animal.",
    "Paris",
    "The dog runs in the park. The text is about animals and the warm afternoon.",
]
SQRT_D = math.sqrt(D_MODEL)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def source(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> SourceConfig:
    return build_tiny_source(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def engine(source: SourceConfig) -> NlaEngine:
    return NlaEngine.load(source, device="cpu", dtype="float32")


def _unit(index: int) -> torch.Tensor:
    vector = torch.zeros(D_MODEL)
    vector[index] = 1.0
    return vector


def _hand_prediction(source: SourceConfig, text: str) -> torch.Tensor:
    """value_head @ (block K's output at the prompt's last token), from a separately loaded AR trunk
    whose final norm is switched off, read through `output_hidden_states`."""
    trunk = AutoModel.from_pretrained(source.ar, dtype=torch.float32).eval()
    trunk.norm = torch.nn.Identity()  # the AR reads the residual stream, not the normed output
    tokenizer = _tokenizer(source)
    ids = tokenizer(AR_TEMPLATE.replace("{explanation}", text), add_special_tokens=True)[
        "input_ids"
    ]
    with torch.no_grad():
        hidden = trunk(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    head = load_file(str(Path(source.ar) / "value_head.safetensors"))["weight"]
    return head @ hidden[LAYER + 1][0, -1]


def _tokenizer(source: SourceConfig) -> Any:
    return AutoTokenizer.from_pretrained(source.ar)


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_the_ar_prediction_is_the_value_head_on_block_k_at_the_last_token(engine, source):
    expected = _hand_prediction(source, TEXTS[0])
    predicted = engine.reconstructor.predict([TEXTS[0]])
    assert predicted.shape == (1, D_MODEL) and predicted.dtype == torch.float32
    assert torch.allclose(predicted[0], expected, rtol=1e-5, atol=1e-6)


def test_the_ar_trunk_is_the_first_k_plus_1_blocks_of_the_target(engine):
    ids = engine.reconstructor.prompts([TEXTS[0]])[0]
    with torch.no_grad():
        target = engine.target.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    head = engine.reconstructor.value_head
    expected = head @ target.hidden_states[LAYER + 1][0, -1]
    predicted = engine.reconstructor.predict([TEXTS[0]])[0]
    assert torch.allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_the_ar_prompt_is_the_raw_template_tokenized_with_one_bos(engine, source):
    tokenizer = _tokenizer(source)
    ids = engine.reconstructor.prompts([TEXTS[0]])[0]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids[1:]) == AR_TEMPLATE.replace("{explanation}", TEXTS[0])
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") not in ids  # not chat-templated


def test_a_right_padded_batch_predicts_what_one_by_one_prediction_does(engine):
    lengths = {len(p) for p in engine.reconstructor.prompts(TEXTS)}
    assert len(lengths) == len(TEXTS), "the texts must pad to different lengths"
    batch = engine.reconstructor.predict(TEXTS)
    alone = torch.cat([engine.reconstructor.predict([t]) for t in TEXTS])
    assert torch.allclose(batch, alone, rtol=1e-5, atol=1e-5)


def test_the_engine_score_matches_the_hand_computed_fidelity(engine, source):
    ids = engine.tokenize(
        [ChatTurn("user", "My cat loves to sleep on the warm windowsill.")]
    ).token_ids
    target = engine.capture(ids, [len(ids) - 2])[0]
    p = _hand_prediction(source, TEXTS[1]).tolist()
    g = target.tolist()
    p_hat = [x * SQRT_D / _norm(p) for x in p]
    g_hat = [x * SQRT_D / _norm(g) for x in g]
    mse = sum((a - b) ** 2 for a, b in zip(p_hat, g_hat, strict=True)) / D_MODEL
    cosine = sum(a * b for a, b in zip(p, g, strict=True)) / (_norm(p) * _norm(g))
    [score] = engine.score([TEXTS[1]], target[None])
    assert score.mse == pytest.approx(mse, rel=1e-4)
    assert score.cosine == pytest.approx(cosine, rel=1e-4, abs=1e-6)
    assert score.mse == pytest.approx(2 * (1 - score.cosine), rel=1e-4)
    assert score.fve == pytest.approx(1 - mse / VAR_BASELINE, rel=1e-4)
    assert score.relative_mse == pytest.approx(mse / VAR_BASELINE, rel=1e-4)
    assert score.confidence == confidence(mse / VAR_BASELINE)


def test_the_ar_mse_scale_defaults_to_the_square_root_of_d_model(engine):
    assert engine.reconstructor.meta.mse_scale == pytest.approx(SQRT_D)
    assert engine.reconstructor.meta.var_baseline == VAR_BASELINE


@pytest.mark.parametrize(
    ("relative_mse", "pill"),
    [
        (0.0, "high"),
        (0.2999, "high"),
        (0.3, "medium"),
        (0.4999, "medium"),
        (0.5, "low"),
        (3.0, "low"),
        (None, None),
    ],
)
def test_the_confidence_pill_follows_the_relative_mse_thresholds(relative_mse, pill):
    assert confidence(relative_mse) == pill


@pytest.mark.parametrize(
    ("relative_mse", "specificity", "pill"),
    [
        (0.1, None, "high"),
        (0.1, 1.0, "high"),
        (0.1, 0.8, "high"),
        (0.1, 0.7999, "medium"),
        (0.1, 0.5, "medium"),
        (0.1, 0.4999, "low"),
        (0.4, 0.9, "medium"),
        (0.4, 0.6, "medium"),
        (0.4, 0.2, "low"),
        (0.7, 1.0, "low"),
        (None, 0.1, None),
    ],
)
def test_low_specificity_caps_the_confidence_pill(relative_mse, specificity, pill):
    assert confidence(relative_mse, specificity) == pill


def test_fidelities_carry_each_rows_specificity_into_its_pill():
    v = torch.arange(1.0, D_MODEL + 1)
    exact, unspecific = fidelities(
        torch.stack([v, v]), torch.stack([v, v]), SQRT_D, 0.5, [0.9, 0.1]
    )
    assert (exact.specificity, exact.confidence) == (0.9, "high")
    assert (unspecific.specificity, unspecific.confidence) == (0.1, "low")
    [unranked] = fidelities(v[None], v[None], SQRT_D, 0.5)
    assert (unranked.specificity, unranked.confidence) == (None, "high")


def test_orthogonal_vectors_score_an_mse_of_2_at_the_sqrt_d_scale():
    [score] = fidelities(_unit(0)[None], (_unit(1) * 7.0)[None], SQRT_D, None)
    assert score.mse == pytest.approx(2.0)
    assert score.cosine == pytest.approx(0.0)
    assert (score.fve, score.relative_mse, score.confidence) == (None, None, None)


def test_identical_directions_score_zero_and_opposite_ones_four():
    v = torch.arange(1.0, D_MODEL + 1)
    same, opposite = fidelities(torch.stack([v, v]), torch.stack([3 * v, -v]), SQRT_D, None)
    assert same.mse == pytest.approx(0.0, abs=1e-6)
    assert same.cosine == pytest.approx(1.0)
    assert opposite.mse == pytest.approx(4.0)
    assert opposite.cosine == pytest.approx(-1.0)


def test_fve_and_relative_mse_use_the_variance_baseline():
    [score] = fidelities(_unit(0)[None], _unit(1)[None], SQRT_D, 0.5)
    assert score.relative_mse == pytest.approx(4.0)
    assert score.fve == pytest.approx(-3.0)
    assert score.confidence == "low"
    [good] = fidelities(_unit(0)[None], (_unit(0) + 0.1 * _unit(1))[None], SQRT_D, 0.5)
    cos = 1 / math.sqrt(1.01)
    assert good.mse == pytest.approx(2 * (1 - cos), rel=1e-5)
    assert good.fve == pytest.approx(1 - 2 * (1 - cos) / 0.5, rel=1e-5)
    assert good.confidence == "high"


def test_a_null_mse_scale_compares_the_raw_vectors():
    a, b = 3.0 * _unit(0), 4.0 * _unit(1)
    [score] = fidelities(a[None], b[None], None, None)
    assert score.mse == pytest.approx((9.0 + 16.0) / D_MODEL)
