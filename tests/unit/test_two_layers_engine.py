"""Two NLA sources of one target at different layers read the same tokens, each at its own block:
`output_hidden_states[K + 1]` of the shared target for its own K (issue 17 item 4)."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import LAYER
from tests.two_sources import SECOND_LAYER, build_two_sources
from workers.nla.engine import NlaEngine
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress

SENTENCE = "My cat loves to sleep on the warm windowsill in the afternoon."


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    first, second = build_two_sources(tmp_path_factory.mktemp("two-sources"))
    assert first.target == second.target
    return [NlaEngine.load(s, device="cpu") for s in (first, second)]


def test_each_source_captures_the_output_of_its_own_block(engines):
    first, second = engines
    tokens = first.tokenize([ChatTurn("user", SENTENCE)]).token_ids
    assert second.tokenize([ChatTurn("user", SENTENCE)]).token_ids == tokens
    with torch.no_grad():
        hidden = first.target.model(torch.tensor([tokens]), output_hidden_states=True).hidden_states
    positions = [3, 7, len(tokens) - 1]
    for engine, layer in ((first, LAYER), (second, SECOND_LAYER)):
        assert engine.layer == layer
        captured = engine.capture(tokens, positions)
        assert torch.equal(captured, hidden[layer + 1][0, positions].float()), layer
    assert not torch.equal(first.capture(tokens, positions), second.capture(tokens, positions))


def test_each_source_explains_and_scores_the_activation_at_its_own_block(engines):
    tokens = engines[0].tokenize([ChatTurn("user", SENTENCE)]).token_ids
    with torch.no_grad():
        model = engines[0].target.model
        hidden = model(torch.tensor([tokens]), output_hidden_states=True).hidden_states
    settings = GenerationSettings(temperature=0.0, max_new_tokens=4)
    for engine, layer in zip(engines, (LAYER, SECOND_LAYER), strict=True):
        [result] = engine.explain(tokens, [5], settings, NoProgress())
        assert result.l2_norm == pytest.approx(float(hidden[layer + 1][0, 5].norm()), rel=1e-5)
        assert 0.0 <= result.fidelity.mse <= 4.0
