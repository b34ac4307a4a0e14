"""Activation capture (output of block K) and injection into the AV (embedding row or block output),
checked against `output_hidden_states`, raw embedding tables and hand-computed rescaling."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tests.tiny_models import D_MODEL, INJECTION_SCALE, LAYER, build_tiny_source
from workers.nla.capture import capture_block_output
from workers.nla.decode import DecodeSpec, generate
from workers.nla.engine import NlaEngine
from workers.nla.inject import embeddings_with_injection, patched_block_output, rescale
from workers.nla.loading import decoder_layers
from workers.nla.types import ChatTurn, GenerationSettings

TURNS = [
    ChatTurn("user", "My cat loves to sleep on the warm windowsill in the afternoon."),
    ChatTurn("assistant", "A cat is a small animal."),
]
#: The factor each architecture's embedding module applies to the table rows.
EMBED_SCALE = {"llama": 1.0, "gemma3": math.sqrt(D_MODEL)}
BLOCK_INJECTION_LAYER = 1


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NlaEngine]:
    return {
        family: NlaEngine.load(
            build_tiny_source(tmp_path_factory.mktemp(family), family),
            device="cpu",
            dtype="float32",
        )
        for family in ("llama", "gemma3")
    }


@pytest.fixture(scope="module")
def block_engine(tmp_path_factory: pytest.TempPathFactory) -> NlaEngine:
    """A tiny source whose AV injects at the output of block 1 (`extraction.injection_layer`)."""
    source = build_tiny_source(
        tmp_path_factory.mktemp("block"),
        av_changes={"extraction__injection_layer": BLOCK_INJECTION_LAYER},
    )
    return NlaEngine.load(source, device="cpu", dtype="float32")


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class CallCounter:
    """Counts forward calls of one module (a real forward hook, removed by `close`)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self.handle.remove()


class BlockOutputs:
    """Records a copy of every output of one block (as seen at the time the hook runs)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seen: list[torch.Tensor] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.seen.append(_hidden(output).detach().clone())

    def close(self) -> None:
        self.handle.remove()


class BlockInputs:
    """Records the hidden states that reach block `index` on every call (block 0: inputs_embeds)."""

    def __init__(self, model: torch.nn.Module, index: int = 0) -> None:
        self.seen: list[torch.Tensor] = []
        block = decoder_layers(model)[index]
        self.handle = block.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        self.seen.append(hidden.detach().clone())

    def close(self) -> None:
        self.handle.remove()


def _ids(engine: NlaEngine) -> torch.Tensor:
    return torch.tensor([engine.tokenize(TURNS).token_ids])


def _hand_rescaled(vectors: torch.Tensor, scale: float) -> torch.Tensor:
    """v · scale / ‖v‖ with the norm summed in Python, independent of `rescale`."""
    rows = []
    for row in vectors.tolist():
        norm = math.sqrt(sum(x * x for x in row))
        rows.append([x * scale / norm for x in row])
    return torch.tensor(rows)


def _vectors(batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, D_MODEL, generator=generator) * 40.0


# Capture


def test_the_capture_equals_output_hidden_states_after_block_k_at_every_position(engines, family):
    engine = engines[family]
    ids = _ids(engine)
    with torch.no_grad():
        expected = engine.target.model(input_ids=ids, output_hidden_states=True).hidden_states
    captured = capture_block_output(engine.target.model, ids, LAYER)
    assert captured.dtype == torch.float32
    assert captured.shape == (1, ids.shape[1], D_MODEL)
    assert torch.equal(captured, expected[LAYER + 1])
    assert not torch.equal(captured, expected[LAYER])


def test_the_engine_capture_returns_block_k_outputs_at_the_requested_positions(engines, family):
    engine = engines[family]
    ids = _ids(engine)
    positions = [ids.shape[1] - 1, 0, 13, 5]
    with torch.no_grad():
        expected = engine.target.model(input_ids=ids, output_hidden_states=True).hidden_states
    vectors = engine.capture(ids[0].tolist(), positions)
    assert vectors.dtype == torch.float32
    assert torch.equal(vectors, expected[LAYER + 1][0, positions])


def test_the_capture_hook_stops_the_forward_pass_after_block_k(engines, family):
    model = engines[family].target.model
    blocks = decoder_layers(model)
    hooks_before = list(blocks[LAYER]._forward_hooks)
    counters = [
        CallCounter(blocks[LAYER]),
        CallCounter(blocks[LAYER + 1]),
        CallCounter(model.lm_head),
    ]
    try:
        capture_block_output(model, _ids(engines[family]), LAYER)
    finally:
        for counter in counters:
            counter.close()
    assert [c.calls for c in counters] == [1, 0, 0]
    assert list(blocks[LAYER]._forward_hooks) == hooks_before, "the capture hook must be removed"


def test_the_engine_capture_runs_no_block_deeper_than_k(engines, family):
    engine = engines[family]
    engine.cache.clear()  # earlier tests captured this prefix, and a cached position runs nothing
    deeper = CallCounter(decoder_layers(engine.target.model)[LAYER + 1])
    block_k = CallCounter(decoder_layers(engine.target.model)[LAYER])
    try:
        engine.capture([*engine.tokenize(TURNS[:1]).token_ids, 7], [3])
    finally:
        deeper.close()
        block_k.close()
    assert (block_k.calls, deeper.calls) == (1, 0)


# Injection at the embedding layer


def test_rescale_gives_each_row_the_injection_scale_as_its_norm():
    vectors = _vectors(3)
    rescaled = rescale(vectors, INJECTION_SCALE)
    assert rescaled.dtype == torch.float32
    assert torch.allclose(rescaled, _hand_rescaled(vectors, INJECTION_SCALE), rtol=1e-6, atol=1e-6)
    assert rescaled.norm(dim=-1).tolist() == pytest.approx([INJECTION_SCALE] * 3, rel=1e-6)


def test_rescale_without_a_scale_leaves_rows_raw_and_a_zero_row_stays_zero():
    vectors = _vectors(2)
    assert torch.equal(rescale(vectors, None), vectors)
    assert torch.equal(rescale(torch.zeros(1, D_MODEL), INJECTION_SCALE), torch.zeros(1, D_MODEL))


def test_embedding_injection_overwrites_exactly_the_marker_row(engines, family):
    verbalizer = engines[family].verbalizer
    model, marker = verbalizer.model, verbalizer.marker
    ids = verbalizer.prompt.expand(2, -1)
    injected = _hand_rescaled(_vectors(2), INJECTION_SCALE)
    embeds = embeddings_with_injection(model, ids, marker, injected)
    with torch.no_grad():
        plain = model.get_input_embeddings()(ids)
    others = [p for p in range(ids.shape[1]) if p != marker]
    assert torch.equal(embeds[:, marker], injected)
    assert torch.equal(embeds[:, others], plain[:, others])
    assert not torch.equal(plain[:, marker], injected)


def test_the_prompt_rows_carry_the_architectures_embedding_scale(engines, family):
    verbalizer = engines[family].verbalizer
    model, marker = verbalizer.model, verbalizer.marker
    ids = verbalizer.prompt
    embeds = embeddings_with_injection(model, ids, marker, torch.ones(1, D_MODEL))
    table = model.get_input_embeddings().weight.detach()
    expected = table[ids] * EMBED_SCALE[family]
    others = [p for p in range(ids.shape[1]) if p != marker]
    assert torch.allclose(embeds[:, others], expected[:, others], rtol=1e-6, atol=0)


def test_the_injected_row_is_not_multiplied_by_the_gemma_embedding_scale(engines):
    verbalizer = engines["gemma3"].verbalizer
    ids, marker = verbalizer.prompt, verbalizer.marker
    injected = _hand_rescaled(_vectors(1), INJECTION_SCALE)
    embeds = embeddings_with_injection(verbalizer.model, ids, marker, injected)
    assert float(embeds[0, marker].norm()) == pytest.approx(INJECTION_SCALE, rel=1e-6)
    assert torch.equal(embeds[0, marker], injected[0])


def test_the_verbalizer_feeds_the_rescaled_vector_as_the_marker_embedding(engines, family):
    verbalizer = engines[family].verbalizer
    vectors = _vectors(2, seed=1)
    table = verbalizer.model.get_input_embeddings().weight.detach()
    prompt_rows = table[verbalizer.prompt[0]] * EMBED_SCALE[family]
    verbalizer.prefix_cache()  # the tokens before the marker run once per process, not per request
    inputs = BlockInputs(verbalizer.model)
    try:
        verbalizer.verbalize(vectors, GenerationSettings(max_new_tokens=2))
    finally:
        inputs.close()
    prefill = inputs.seen[0]  # the marker and the tokens after it, one row per vector
    marker = verbalizer.marker
    assert prefill.shape == (2, verbalizer.prompt.shape[1] - marker, D_MODEL)
    expected = _hand_rescaled(vectors, INJECTION_SCALE)
    assert torch.allclose(prefill[:, 0], expected, rtol=1e-6, atol=1e-6)
    assert prefill[:, 0].norm(dim=-1).tolist() == pytest.approx([INJECTION_SCALE] * 2, rel=1e-6)
    for row in range(2):
        assert torch.allclose(prefill[row, 1:], prompt_rows[marker + 1 :], rtol=1e-6, atol=0)


def test_the_cached_prompt_prefix_gives_the_same_text_as_a_full_prefill(engines, family):
    verbalizer = engines[family].verbalizer
    vectors = _vectors(3, seed=4)
    spec = DecodeSpec(max_new_tokens=6)
    ids = verbalizer.prompt.expand(3, -1)
    injected = rescale(vectors, INJECTION_SCALE)
    embeds = embeddings_with_injection(verbalizer.model, ids, verbalizer.marker, injected)
    full = generate(verbalizer.model, verbalizer.tokenizer, spec, inputs_embeds=embeds)
    cached = verbalizer.verbalize(vectors, GenerationSettings(max_new_tokens=6))
    assert [d.text for d in full] == [v.raw_text for v in cached]


# Injection at the output of block j > 0


def test_block_injection_replaces_the_marker_row_of_block_j_during_the_prefill_only(block_engine):
    verbalizer = block_engine.verbalizer
    model, marker = verbalizer.model, verbalizer.marker
    block = decoder_layers(model)[BLOCK_INJECTION_LAYER]
    vectors = _vectors(2, seed=2)
    before = BlockOutputs(block)  # registered first: sees the block's own output
    try:
        with patched_block_output(model, BLOCK_INJECTION_LAYER, marker, vectors):
            after = BlockOutputs(block)  # registered after the patch: sees what deeper blocks get
            try:
                spec = DecodeSpec(max_new_tokens=3)
                generate(
                    model, verbalizer.tokenizer, spec, input_ids=verbalizer.prompt.expand(2, -1)
                )
            finally:
                after.close()
    finally:
        before.close()
    prompt_length = verbalizer.prompt.shape[1]
    assert [t.shape[1] for t in after.seen] == [prompt_length, 1, 1]
    others = [p for p in range(prompt_length) if p != marker]
    assert torch.equal(after.seen[0][:, marker], vectors)
    assert torch.equal(after.seen[0][:, others], before.seen[0][:, others])
    assert not torch.equal(before.seen[0][:, marker], vectors)
    for patched, plain in zip(after.seen[1:], before.seen[1:], strict=True):
        assert torch.equal(patched, plain)


def test_the_block_patch_is_removed_when_its_context_exits(block_engine):
    model = block_engine.verbalizer.model
    ids = block_engine.verbalizer.prompt
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    with patched_block_output(model, BLOCK_INJECTION_LAYER, 3, _vectors(1)), torch.no_grad():
        patched = model(input_ids=ids).logits
    with torch.no_grad():
        again = model(input_ids=ids).logits
    assert not torch.equal(patched, plain)
    assert torch.equal(again, plain)


def test_the_block_verbalizer_patches_block_j_and_leaves_the_embeddings_alone(block_engine):
    verbalizer = block_engine.verbalizer
    model, marker = verbalizer.model, verbalizer.marker
    vectors = _vectors(2, seed=3)
    verbalizer.prefix_cache()  # the tokens before the marker run once per process, not per request
    inputs = BlockInputs(model)
    deeper = BlockInputs(model, BLOCK_INJECTION_LAYER + 1)  # block j's output as block j+1 gets it
    try:
        verbalizer.verbalize(vectors, GenerationSettings(max_new_tokens=2))
    finally:
        inputs.close()
        deeper.close()
    with torch.no_grad():
        plain = model.get_input_embeddings()(verbalizer.prompt)
    assert torch.equal(inputs.seen[0][0], plain[0, marker:])
    expected = _hand_rescaled(vectors, INJECTION_SCALE)
    assert torch.allclose(deeper.seen[0][:, 0], expected, rtol=1e-6, atol=1e-6)
    assert [t.shape[1] for t in deeper.seen] == [verbalizer.prompt.shape[1] - marker, 1]
