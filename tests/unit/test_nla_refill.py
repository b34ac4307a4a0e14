"""Slot refill: a row that joins a running batch mid-way (its prompt of another length, padded into
the shared KV cache) generates exactly what it generates alone, greedy, on a tiny Llama in float32;
so do the rows already running when it joins. Also after a shared prefix cache and from
embeddings, as the verbalizer feeds it."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import torch

from tests.tiny_models import N_LAYERS, _config, build_tiny_source, build_tokenizer
from tests.unit.test_nla_batching import _staggered_end_ids
from workers.nla.decode import Decoded, DecodeSpec, generate
from workers.nla.engine import NlaEngine
from workers.nla.refill import Prompt, generate_refill
from workers.nla.types import ChatTurn, GenerationSettings

TEXT = (
    "My cat loves to sleep on the warm windowsill in the afternoon, and the dog sleeps by the "
    "door while the sun sets slowly over the quiet garden."
)


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any, list[int]]:
    """A tiny Llama whose greedy tokens depend on positions: fast rotary frequencies (θ = 10) and
    sharp attention (query and key weights × 20). A random tiny model at θ = 10⁴ moves its logits by
    3e-4 when a position is off by five, so a wrong position could not change a single token."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    config = _config("llama", len(tokenizer), N_LAYERS)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10.0}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(20)
            layer.self_attn.k_proj.weight.mul_(20)
    return model, tokenizer, tokenizer(TEXT)["input_ids"]


def test_the_tiny_models_greedy_token_depends_on_its_position(tiny):
    model, _, ids = tiny
    flips = 0
    for end in range(10, 26):
        with torch.no_grad():
            right = model(input_ids=torch.tensor([ids[:end]])).logits[0, -1]
            late = torch.cat([torch.arange(end - 1), torch.tensor([end + 4])])[None]
            off = model(input_ids=torch.tensor([ids[:end]]), position_ids=late).logits[0, -1]
        flips += int(right.argmax() != off.argmax())
    assert flips >= 8  # of 16: a position off by five changes the next token most of the time


def _prompts(ids: list[int]) -> list[list[int]]:
    """Prompts of five different lengths."""
    return [ids[:12], ids[3:20], ids[5:14], ids[1:24], ids[7:17]]


class Feed:
    """Hands out prompts one at a time and records, at each hand-out, which rows were mid-way
    (had streamed text and were not done)."""

    def __init__(self, prompts: list[Prompt]) -> None:
        self.prompts, self.given = list(prompts), 0
        self.streamed: set[int] = set()
        self.done: set[int] = set()
        self.joined_beside: list[set[int]] = []

    def __call__(self) -> Prompt | None:
        if self.given == len(self.prompts):
            return None
        self.joined_beside.append(self.streamed - self.done)
        self.given += 1
        return self.prompts[self.given - 1]

    def on_text(self, row: int, _text: str) -> None:
        self.streamed.add(row)

    def on_done(self, finished: list[tuple[int, Decoded]]) -> None:
        self.done.update(row for row, _ in finished)


def _staggered_spec(model: Any, tokenizer: Any, prompts: list[list[int]]) -> DecodeSpec:
    free_spec = DecodeSpec(max_new_tokens=10, repetition_penalty=1.3)
    free = [generate(model, tokenizer, free_spec, input_ids=torch.tensor([p]))[0] for p in prompts]
    return dataclasses.replace(free_spec, end_ids=_staggered_end_ids(free))


def test_rows_that_join_mid_batch_each_equal_their_own_solo_run(tiny):
    model, tokenizer, ids = tiny
    prompts = _prompts(ids)
    spec = _staggered_spec(model, tokenizer, prompts)
    solo = [generate(model, tokenizer, spec, input_ids=torch.tensor([p]))[0] for p in prompts]
    feed = Feed([Prompt(input_ids=torch.tensor([p])) for p in prompts])
    refilled = generate_refill(
        model, tokenizer, spec, feed, slots=2, on_text=feed.on_text, on_done=feed.on_done
    )
    assert refilled == solo
    assert {len(d.token_ids) for d in solo} != {spec.max_new_tokens}  # rows stop at other steps
    assert any(feed.joined_beside[2:])  # some row joined while another was half-way


def test_a_refilled_batch_after_a_shared_prefix_and_from_embeddings_equals_solo_runs(tiny):
    model, tokenizer, ids = tiny
    prefix, rests = ids[:6], [ids[6:14], ids[6:20], ids[6:11], ids[6:23]]
    with torch.no_grad():
        shared = model(input_ids=torch.tensor([prefix]), use_cache=True).cache
    embed = model.get_input_embeddings()
    spec = _staggered_spec(model, tokenizer, [prefix + r for r in rests])

    def embeds(rest: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return embed(torch.tensor([rest]))

    solo = [
        generate(model, tokenizer, spec, inputs_embeds=embeds(r), cache=copy.deepcopy(shared))[0]
        for r in rests
    ]
    feed = Feed([Prompt(inputs_embeds=embeds(r), cache=copy.deepcopy(shared)) for r in rests])
    refilled = generate_refill(
        model, tokenizer, spec, feed, slots=2, on_text=feed.on_text, on_done=feed.on_done
    )
    assert refilled == solo


def test_one_slot_runs_rows_one_after_another_and_more_slots_than_rows_is_one_batch(tiny):
    model, tokenizer, ids = tiny
    prompts = _prompts(ids)[:3]
    spec = DecodeSpec(max_new_tokens=5)
    solo = [generate(model, tokenizer, spec, input_ids=torch.tensor([p]))[0] for p in prompts]
    for slots in (1, 8):
        feed = Feed([Prompt(input_ids=torch.tensor([p])) for p in prompts])
        assert generate_refill(model, tokenizer, spec, feed, slots=slots) == solo
    assert generate_refill(model, tokenizer, spec, lambda: None, slots=4) == []


@pytest.mark.parametrize("injection_layer", [0, 1], ids=["embedding-row", "block-output"])
def test_the_verbalizer_refilling_two_slots_explains_each_vector_as_it_does_alone(
    tmp_path, injection_layer
):
    changes = {"extraction__injection_layer": injection_layer} if injection_layer else {}
    source = build_tiny_source(tmp_path, "llama", av_changes=changes)
    engine = NlaEngine.load(source, device="cpu", dtype="float32")
    av = engine.verbalizer
    assert av.can_refill() and av.meta.injection_layer == injection_layer
    ids = engine.tokenize([ChatTurn("user", TEXT)]).token_ids
    vectors = engine.capture(ids, list(range(4, 10)))
    settings = GenerationSettings(temperature=0, max_new_tokens=6)
    alone = [av.verbalize(v[None], settings)[0] for v in vectors]
    waiting = iter(vectors)
    finished: list[int] = []
    refilled = av.verbalize_refill(
        lambda: next(waiting, None),
        settings,
        slots=2,
        on_done=lambda rows: finished.extend(row for row, _ in rows),
    )
    assert refilled == alone
    assert sorted(finished) == list(range(6))


def test_a_gemma3_verbalizer_keeps_fixed_batches(tmp_path):
    source = build_tiny_source(tmp_path, "gemma3")
    assert not NlaEngine.load(source, device="cpu", dtype="float32").verbalizer.can_refill()
