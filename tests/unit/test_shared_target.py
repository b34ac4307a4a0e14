"""Sources of one target share one loaded target model in a worker process (issue 17 item 4's
leftover): the same weights by file identity, the same outputs as separate loads, and the shared
model dropped with the last engine that uses it."""

from __future__ import annotations

import gc
import os
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from tests.tiny_models import LAYER, build_tiny_source
from tests.two_sources import SECOND_LAYER, build_two_sources
from workers.nla import registry
from workers.nla.engine import NlaEngine
from workers.nla.errors import ModelLoadError
from workers.nla.loading import decoder_layers, load_causal_lm
from workers.nla.shared_models import SharedModels
from workers.nla.sidecar import SIDECAR
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress
from workers.source_config import SourceConfig

SENTENCE = "My cat loves to sleep on the warm windowsill in the afternoon."
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=6)


def _linked_av(target: Path, av: Path, out: Path) -> None:
    """An AV as the demo writes it: the target's files hard-linked, and a sidecar that patches the
    activation in at a block's output (a hook on the target's own blocks while it decodes)."""
    out.mkdir()
    for file in target.iterdir():
        os.link(file, out / file.name)
    meta = yaml.safe_load((av / SIDECAR).read_text(encoding="utf-8"))
    meta["extraction"]["injection_layer"] = SECOND_LAYER
    (out / SIDECAR).write_text(yaml.safe_dump(meta, allow_unicode=True), "utf-8")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, SourceConfig]:
    root = tmp_path_factory.mktemp("shared-target")
    first, second = build_two_sources(root)
    # Another target: the same seeded weights, but other files, so not the same model.
    other = replace(build_tiny_source(root / "other"), id="tiny-other")
    _linked_av(Path(first.target), Path(first.av), root / "linked-av")
    linked = replace(first, id="tiny-linked-av", av=str(root / "linked-av"))
    return {"first": first, "second": second, "other": other, "linked": linked}


@pytest.fixture
def fresh_registry(monkeypatch) -> SharedModels:
    models = SharedModels()
    for name, value in (("_served", {}), ("_engines", {}), ("_loading", {}), ("_models", models)):
        monkeypatch.setattr(registry, name, value)
    return models


def _serve(*served: SourceConfig) -> list[NlaEngine]:
    registry.configure(served, device="cpu", dtype="float32")
    return [registry.get_engine(s.id) for s in served]


def _tokens(engine: NlaEngine) -> list[int]:
    return engine.tokenize([ChatTurn("user", SENTENCE)]).token_ids


def test_two_sources_of_one_target_share_its_model_and_a_source_of_another_target_does_not(
    sources, fresh_registry
):
    first, second, other = _serve(sources["first"], sources["second"], sources["other"])
    assert first.target.model is second.target.model
    assert other.target.model is not first.target.model
    # Each AV has its own weights here (tiny_models seeds them apart): nothing to share.
    assert first.verbalizer.model is not second.verbalizer.model
    assert first.verbalizer.model is not first.target.model
    assert first.reconstructor.model is not second.reconstructor.model
    assert first.target is not second.target  # its vLLM generator stays per source
    assert {"tiny-llama", "tiny-llama-l1"} in fresh_registry.users()
    assert {"tiny-other"} in fresh_registry.users()


def test_captures_at_both_layers_equal_the_hidden_states_of_a_freshly_loaded_target(
    sources, fresh_registry
):
    first, second = _serve(sources["first"], sources["second"])
    tokens = _tokens(first)
    fresh = load_causal_lm(Path(sources["first"].target), torch.device("cpu"), torch.float32)
    with torch.no_grad():
        hidden = fresh(torch.tensor([tokens]), output_hidden_states=True).hidden_states
    positions = [2, 6, len(tokens) - 1]
    for _ in range(2):  # the second round reads after the other source's calls on the same model
        for engine, layer in ((first, LAYER), (second, SECOND_LAYER)):
            engine.cache.clear()
            captured = engine.capture(tokens, positions)
            assert torch.equal(captured, hidden[layer + 1][0, positions].float()), layer
            engine.explain(tokens, [5], GREEDY, NoProgress())


def test_explanations_and_replies_with_a_shared_target_equal_those_of_separate_loads(
    sources, fresh_registry
):
    shared = _serve(sources["first"], sources["second"], sources["linked"])
    for engine in shared:
        alone = NlaEngine.load(engine.source, device="cpu", dtype="float32")
        tokens = _tokens(alone)
        turns = [ChatTurn("user", SENTENCE)]
        for _ in range(2):
            got = engine.explain(tokens, [3, 5, 9], GREEDY, NoProgress())
            assert got == alone.explain(tokens, [3, 5, 9], GREEDY, NoProgress()), engine.source.id
            assert engine.reply(turns, GREEDY, lambda _t: None) == alone.reply(
                turns, GREEDY, lambda _t: None
            )


def test_an_av_hard_linked_to_the_target_is_the_target_model_and_leaves_no_hook_behind(
    sources, fresh_registry
):
    [linked] = _serve(sources["linked"])
    model = linked.target.model
    assert linked.verbalizer.model is model
    assert linked.verbalizer.meta.injection_layer == SECOND_LAYER
    tokens = _tokens(linked)

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        linked.cache.clear()
        with torch.no_grad():
            logits = model(torch.tensor([tokens])).logits
        return linked.capture(tokens, [4, 8]), logits

    before = read()
    linked.explain(tokens, [4, 8], GREEDY, NoProgress())
    linked.reply([ChatTurn("user", SENTENCE)], GREEDY, lambda _t: None)
    assert not any(block._forward_hooks for block in decoder_layers(model))
    after = read()
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])


def test_the_shared_model_is_dropped_only_with_the_last_source_that_uses_it(
    sources, fresh_registry
):
    first, second, other = _serve(sources["first"], sources["second"], sources["other"])
    target = weakref.ref(first.target.model)
    kept = weakref.ref(other.target.model)
    del first
    registry.configure([sources["second"], sources["other"]], device="cpu", dtype="float32")
    gc.collect()
    assert target() is second.target.model  # the second source still uses it
    assert {"tiny-llama-l1"} in fresh_registry.users()
    assert registry.get_engine(sources["second"].id) is second
    [linked] = _serve(sources["second"], sources["other"], sources["linked"])[2:]
    assert linked.target.model is second.target.model  # still held, so not loaded again
    del linked
    del second
    registry.configure([sources["other"]], device="cpu", dtype="float32")
    gc.collect()
    assert target() is None
    assert kept() is other.target.model
    assert fresh_registry.users() == [{"tiny-other"}] * 2  # its target and its AV
    [again] = _serve(sources["first"])  # served again: loaded again
    assert again.target.model is not other.target.model


def test_a_source_that_fails_to_load_holds_no_shared_model(sources, fresh_registry, tmp_path):
    broken = replace(sources["second"], id="tiny-broken", ar=str(tmp_path / "missing"))
    registry.configure([sources["first"], broken], device="cpu", dtype="float32")
    first = registry.get_engine(sources["first"].id)
    with pytest.raises(ModelLoadError):
        registry.get_engine(broken.id)
    assert {"tiny-llama"} in fresh_registry.users()
    assert all("tiny-broken" not in users for users in fresh_registry.users())
    assert first.target.model is registry.get_engine(first.source.id).target.model
