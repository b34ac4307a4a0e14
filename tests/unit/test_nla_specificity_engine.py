"""The engine ranks each explanation against its source's reference pool: the AR checkpoint's pool
file, then the explanations it scored itself, never those of the explanation's own snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.tiny_models import D_MODEL, build_tiny_source
from workers.nla.engine import NlaEngine
from workers.nla.reference_pool import POOL_FILE, ReferencePool
from workers.nla.scoring import confidence
from workers.nla.specificity import specificity
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress
from workers.source_config import SourceConfig

CAT = [ChatTurn("user", "My cat loves to sleep on the warm windowsill in the afternoon.")]
DOG = [ChatTurn("user", "The dog runs in the park. A cat is a small animal.")]
POOL = torch.randn(40, D_MODEL, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> SourceConfig:
    source = build_tiny_source(tmp_path_factory.mktemp("llama"))
    save_file({"predictions": POOL}, str(Path(source.ar) / POOL_FILE))
    return source


@pytest.fixture(scope="module")
def loaded(source: SourceConfig) -> NlaEngine:
    return NlaEngine.load(source, device="cpu", dtype="float32")


@pytest.fixture
def engine(loaded: NlaEngine) -> NlaEngine:
    """The module's engine with the pool file's 40 entries again (tests add to the ring)."""
    loaded.pool = ReferencePool.from_checkpoint(Path(loaded.source.ar), D_MODEL)
    return loaded


def _explain(engine: NlaEngine, turns: list[ChatTurn], positions: list[int]) -> list:
    ids = engine.tokenize(turns).token_ids
    return engine.explain(ids, positions, GenerationSettings(), NoProgress())


def _hand(engine: NlaEngine, text: str, turns: list[ChatTurn], position: int, pool) -> float:
    ids = engine.tokenize(turns).token_ids
    activation = engine.capture(ids, [position])[0]
    predicted = engine.reconstructor.predict([text])[0]
    rank = specificity(predicted, activation, pool, engine.reconstructor.meta.mse_scale)
    assert rank is not None
    return rank


def _common_prefix(engine: NlaEngine, a: list[ChatTurn], b: list[ChatTurn]) -> int:
    pairs = zip(engine.tokenize(a).token_ids, engine.tokenize(b).token_ids, strict=False)
    return next(i for i, (x, y) in enumerate(pairs) if x != y)


def test_the_engine_loads_the_pool_file_of_the_ar_checkpoint(source):
    engine = NlaEngine.load(source, device="cpu", dtype="float32")
    assert len(engine.pool) == 40
    assert torch.equal(engine.pool.against(None), POOL)


def test_each_explanation_is_ranked_against_the_pool_file(engine):
    [result] = _explain(engine, CAT, [8])
    assert result.specificity == pytest.approx(_hand(engine, result.text, CAT, 8, POOL))
    assert result.fidelity.specificity == result.specificity
    expected = confidence(result.fidelity.relative_mse, result.specificity)
    assert result.fidelity.confidence == expected


def test_a_source_without_a_pool_file_has_no_specificity_until_the_ring_fills(engine):
    engine.pool = ReferencePool(D_MODEL, minimum=4)
    first = _explain(engine, CAT, [6, 7, 8, 9])
    assert [r.specificity for r in first] == [None] * 4
    assert len(engine.pool) == 4  # the batch joins the ring after it is scored
    [later] = _explain(engine, DOG, [9])
    assert later.specificity is not None


def test_an_explanation_is_not_ranked_against_explanations_of_its_own_snapshot(engine):
    engine.pool = ReferencePool(D_MODEL, minimum=4)
    cat = _explain(engine, CAT, [6, 7, 8, 9, 10, 11])
    [again] = _explain(engine, CAT, [12])
    assert again.specificity is None  # all 6 entries are of this snapshot
    [dog] = _explain(engine, DOG, [9])
    assert _common_prefix(engine, CAT, DOG) == 6  # the cat entries are all past the shared preamble
    cat_predictions = engine.reconstructor.predict([r.text for r in [*cat, again]])
    assert dog.specificity == pytest.approx(_hand(engine, dog.text, DOG, 9, cat_predictions))


def test_explained_vectors_are_ranked_against_the_whole_pool_and_do_not_join_it(engine):
    vector = engine.capture(engine.tokenize(CAT).token_ids, [8])
    [result] = engine.explain_vectors(vector, GenerationSettings(), NoProgress())
    predicted = engine.reconstructor.predict([result.text])[0]
    expected = specificity(predicted, vector[0], POOL, engine.reconstructor.meta.mse_scale)
    assert result.specificity == pytest.approx(expected)
    assert len(engine.pool) == 40
