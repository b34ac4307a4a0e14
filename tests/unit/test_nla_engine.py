"""The engine around the models: tokenizing conversations with per-message spans, the activation
cache, request limits, the per-process registry and the sources file."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.tiny_models import LAYER, build_tiny_source
from workers.nla import registry
from workers.nla.cache import ActivationCache, prefix_keys
from workers.nla.engine import MAX_SEQUENCE_TOKENS, NlaEngine
from workers.nla.errors import (
    CheckpointIncompatible,
    InputTooLong,
    PositionOutOfRange,
    SourceNotServed,
)
from workers.nla.loading import decoder_layers
from workers.nla.shared_models import SharedModels
from workers.nla.types import ChatTurn, GenerationSettings, MessageSpan, NoProgress
from workers.source_config import SourceConfig, parse_sources

TURNS = [
    ChatTurn("system", "You are a helpful assistant."),
    ChatTurn("user", "My cat loves to sleep on the warm windowsill in the afternoon."),
    ChatTurn("assistant", "A cat is a small animal."),
]
SOURCE_TOML = """
[[source]]
id = "tiny"
label = "Tiny · layer 2"
target = "/models/target"
av = "/models/av"
ar = "/models/ar"
layer = 2
injection_scale = "sqrt_d_model"
mse_scale = 5
var_baseline = 0.5
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> SourceConfig:
    return build_tiny_source(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def engine(source: SourceConfig) -> NlaEngine:
    return NlaEngine.load(source, device="cpu", dtype="float32")


@pytest.fixture
def fresh(engine: NlaEngine) -> NlaEngine:
    """The module's engine with an empty activation cache of its own."""
    return NlaEngine(
        engine.source, engine.target, engine.verbalizer, engine.reconstructor, ActivationCache()
    )


class ForwardLengths:
    """The sequence length of every forward pass through block 0 of a model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.lengths: list[int] = []
        self.handle = decoder_layers(model)[0].register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        self.lengths.append(int(hidden.shape[1]))

    def __enter__(self) -> ForwardLengths:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def _contains(haystack: list[int], needle: list[int]) -> bool:
    return any(
        haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1)
    )


def _hidden_states(engine: NlaEngine, token_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = engine.target.model(input_ids=torch.tensor([token_ids]), output_hidden_states=True)
    return out.hidden_states[LAYER + 1][0]


# Tokenizing conversations


def test_tokenize_applies_the_chat_template_in_one_step_with_one_bos(engine):
    tokenizer = engine.target.tokenizer
    messages = [{"role": t.role, "content": t.content} for t in TURNS]
    expected = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    templated_then_tokenized = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False))
    assert templated_then_tokenized["input_ids"][:2] == [tokenizer.bos_token_id] * 2  # the trap
    tokens = engine.tokenize(TURNS)
    assert tokens.token_ids == list(expected)
    assert tokens.token_ids.count(tokenizer.bos_token_id) == 1
    assert tokens.token_texts == [tokenizer.decode([i]) for i in tokens.token_ids]


def test_the_spans_cover_the_sequence_contiguously(engine):
    tokens = engine.tokenize(TURNS, add_generation_prompt=True)
    starts = [s.start for s in tokens.spans]
    ends = [s.end for s in tokens.spans]
    assert starts[0] == 0 and ends[-1] == len(tokens.token_ids)
    assert starts[1:] == ends[:-1]
    assert all(s.start < s.end for s in tokens.spans)


def test_each_message_span_holds_its_content_tokens(engine):
    tokenizer = engine.target.tokenizer
    tokens = engine.tokenize(TURNS)
    by_index = {s.message_index: s for s in tokens.spans}
    for index, turn in enumerate(TURNS):
        span = by_index[index]
        content = tokenizer.encode(turn.content, add_special_tokens=False)
        assert span.role == turn.role
        assert _contains(tokens.token_ids[span.start : span.end], content), turn


def test_the_lead_template_span_holds_bos(engine):
    tokens = engine.tokenize(TURNS)
    bos = engine.target.tokenizer.bos_token_id
    assert tokens.spans[0] == MessageSpan(-1, "template", 0, 1)
    assert tokens.token_ids[0] == bos
    assert [s.message_index for s in tokens.spans] == [-1, 0, 1, 2]


def test_a_single_message_conversation_also_has_its_bos_in_the_lead_span(engine):
    tokens = engine.tokenize(TURNS[1:2])
    assert tokens.spans[0] == MessageSpan(-1, "template", 0, 1)
    assert tokens.spans[1] == MessageSpan(0, "user", 1, len(tokens.token_ids))


def test_the_generation_prompt_is_a_final_assistant_span(engine):
    tokenizer = engine.target.tokenizer
    messages = [{"role": t.role, "content": t.content} for t in TURNS[:2]]
    expected = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)[
        "input_ids"
    ]
    tokens = engine.tokenize(TURNS[:2], add_generation_prompt=True)
    assert tokens.token_ids == list(expected)
    last = tokens.spans[-1]
    assert (last.message_index, last.role, last.end) == (2, "assistant", len(expected))
    assert tokenizer.decode(tokens.token_ids[last.start :]) == "<|im_start|>assistant\n"


# The activation cache


def test_a_second_capture_of_the_same_positions_is_served_from_the_cache(fresh):
    token_ids = fresh.tokenize(TURNS).token_ids
    positions = [30, 12, 40]
    with ForwardLengths(fresh.target.model) as passes:
        first = fresh.capture(token_ids, positions)
        hits = fresh.cache.hits
        second = fresh.capture(token_ids, positions)
    assert passes.lengths == [41]  # one pass, only as far as the last position asked for
    assert fresh.cache.hits == hits + 3
    assert torch.equal(first, second)


def test_an_appended_conversation_reuses_the_earlier_captures(fresh):
    before = fresh.tokenize(TURNS[:2]).token_ids
    after = fresh.tokenize(TURNS).token_ids
    assert after[: len(before)] == before
    old = [5, len(before) - 1]
    first = fresh.capture(before, old)
    with ForwardLengths(fresh.target.model) as passes:
        again = fresh.capture(after, old)
    assert passes.lengths == []
    assert torch.equal(again, first)
    new = len(after) - 2
    with ForwardLengths(fresh.target.model) as passes:
        mixed = fresh.capture(after, [*old, new])
    assert passes.lengths == [new + 1]
    assert torch.equal(mixed[:2], first)
    assert torch.allclose(mixed[2], _hidden_states(fresh, after)[new], rtol=0, atol=1e-6)


def test_an_edit_before_a_position_misses_the_cache(fresh):
    token_ids = fresh.tokenize(TURNS).token_ids
    edited = [*token_ids]
    edited[3] = edited[3] + 1
    fresh.capture(token_ids, [2, 20])
    misses = fresh.cache.misses
    vectors = fresh.capture(edited, [2, 20])
    assert fresh.cache.misses == misses + 1  # position 2 is before the edit: a hit
    assert torch.allclose(vectors[1], _hidden_states(fresh, edited)[20], rtol=0, atol=1e-6)


def test_prefix_keys_depend_on_the_tokens_up_to_each_position_only():
    keys = prefix_keys("s", [1, 2, 3, 4], [3, 1])
    appended = prefix_keys("s", [1, 2, 3, 4, 5], [1, 3])
    edited = prefix_keys("s", [1, 2, 9, 4], [1, 3])
    assert keys == [appended[1], appended[0]]
    assert edited[0] == keys[1] and edited[1] != keys[0]
    assert prefix_keys("other", [1, 2, 3, 4], [3]) != keys[:1]


def test_the_cache_evicts_the_least_recently_used_vector():
    cache = ActivationCache(max_entries=2)
    a, b, c = ("s", "a", 0), ("s", "b", 1), ("s", "c", 2)
    cache.put(a, torch.ones(4))
    cache.put(b, torch.zeros(4))
    assert cache.get(a) is not None
    cache.put(c, torch.ones(4))
    assert cache.get(b) is None and cache.get(a) is not None and len(cache) == 2


def test_a_cached_vector_keeps_no_reference_to_the_whole_capture(fresh):
    token_ids = fresh.tokenize(TURNS).token_ids
    fresh.capture(token_ids, [30])
    [key] = prefix_keys(fresh.source.id, token_ids, [30])
    vector = fresh.cache.get(key)
    assert vector is not None
    assert vector.untyped_storage().nbytes() == vector.numel() * vector.element_size()


# Limits and errors


def test_it_rejects_a_position_past_the_end_of_the_conversation(engine):
    token_ids = engine.tokenize(TURNS).token_ids
    n = len(token_ids)
    with pytest.raises(PositionOutOfRange) as caught:
        engine.capture(token_ids, [3, n])
    assert str(caught.value) == (
        f"Token position {n} is outside this conversation, which has {n} tokens "
        f"(positions 0 to {n - 1})."
    )


def test_it_rejects_a_negative_position(engine):
    with pytest.raises(PositionOutOfRange, match="Token position -1 is outside"):
        engine.explain([0, 3, 5], [-1], GenerationSettings(), NoProgress())


def test_it_rejects_more_than_16_positions(engine):
    token_ids = engine.tokenize(TURNS).token_ids
    with pytest.raises(InputTooLong) as caught:
        engine.explain(token_ids, list(range(17)), GenerationSettings(), NoProgress())
    assert str(caught.value) == (
        "One request explains 1 to 16 tokens or vectors; this one asked for 17."
    )


def test_it_rejects_a_request_without_positions(engine):
    with pytest.raises(InputTooLong, match="this one asked for 0"):
        engine.explain([0, 3, 5], [], GenerationSettings(), NoProgress())


def test_it_rejects_more_vectors_than_one_batch(engine):
    with pytest.raises(InputTooLong, match="this one asked for 17"):
        engine.explain_vectors(torch.ones(17, 32), GenerationSettings(), NoProgress())


def test_it_rejects_vectors_of_the_wrong_width(engine):
    with pytest.raises(CheckpointIncompatible, match=r"shape \[n, 32\], found \[2, 16\]"):
        engine.explain_vectors(torch.ones(2, 16), GenerationSettings(), NoProgress())


def test_it_rejects_a_conversation_longer_than_the_source_accepts(engine):
    too_long = [5] * (MAX_SEQUENCE_TOKENS + 1)
    with pytest.raises(InputTooLong) as caught:
        engine.capture(too_long, [0])
    assert str(caught.value) == (
        f"This conversation has {MAX_SEQUENCE_TOKENS + 1} tokens; the source accepts at most "
        f"{MAX_SEQUENCE_TOKENS}. Start a new conversation or shorten this one."
    )


def test_the_registry_refuses_a_source_it_does_not_serve(source, monkeypatch):
    monkeypatch.setattr(registry, "_served", {})
    monkeypatch.setattr(registry, "_engines", {})
    monkeypatch.setattr(registry, "_models", SharedModels())
    registry.configure([source], device="cpu", dtype="float32")
    with pytest.raises(SourceNotServed) as caught:
        registry.get_engine("kitft-l41")
    assert str(caught.value) == (
        "No worker serves the NLA source 'kitft-l41' (this worker serves: tiny-llama); "
        "ask an administrator to start a worker for it."
    )


def test_the_registry_loads_a_served_source_once(source, monkeypatch):
    monkeypatch.setattr(registry, "_served", {})
    monkeypatch.setattr(registry, "_engines", {})
    monkeypatch.setattr(registry, "_models", SharedModels())
    registry.configure([source], device="cpu", dtype="float32")
    engine = registry.get_engine(source.id)
    assert registry.get_engine(source.id) is engine
    assert engine.source == source
    registry.configure([], device="cpu", dtype="float32")
    with pytest.raises(SourceNotServed, match=r"this worker serves: none"):
        registry.get_engine(source.id)


# The sources file


def test_a_sources_file_is_parsed_into_typed_sources():
    [source] = parse_sources(SOURCE_TOML)
    assert source == SourceConfig(
        id="tiny",
        label="Tiny · layer 2",
        target="/models/target",
        av="/models/av",
        ar="/models/ar",
        layer=2,
        injection_scale="sqrt_d_model",
        mse_scale=5.0,
        var_baseline=0.5,
    )


def test_it_rejects_a_sources_file_that_is_not_toml():
    with pytest.raises(CheckpointIncompatible, match=r"^sources\.toml is not valid TOML: "):
        parse_sources("[[source]\nid = ", origin="sources.toml")


def test_it_rejects_a_sources_file_without_sources():
    with pytest.raises(CheckpointIncompatible, match=r"declares no \[\[source\]\] table"):
        parse_sources("title = 'x'")


def test_it_rejects_a_source_missing_a_required_key():
    text = SOURCE_TOML.replace('av = "/models/av"\n', "")
    with pytest.raises(CheckpointIncompatible) as caught:
        parse_sources(text, origin="sources.toml")
    assert str(caught.value) == "sources.toml: source 'tiny' needs a string 'av'."


def test_it_rejects_a_source_with_an_unknown_key():
    text = SOURCE_TOML + 'colour = "blue"\n'
    with pytest.raises(CheckpointIncompatible) as caught:
        parse_sources(text, origin="sources.toml")
    assert str(caught.value) == "sources.toml: source 'tiny' has unknown key(s) colour."


def test_it_rejects_a_source_declared_twice():
    with pytest.raises(CheckpointIncompatible) as caught:
        parse_sources(SOURCE_TOML + SOURCE_TOML, origin="sources.toml")
    assert str(caught.value) == "sources.toml declares source 'tiny' twice."


def test_it_rejects_a_layer_that_is_not_an_integer():
    text = SOURCE_TOML.replace("layer = 2", 'layer = "two"')
    with pytest.raises(CheckpointIncompatible, match="key 'layer' must be int, found 'two'"):
        parse_sources(text)


def test_a_capture_caches_every_position_it_ran_so_an_earlier_token_needs_no_forward_pass(fresh):
    fresh.cache.clear()
    ids = fresh.tokenize(TURNS).token_ids
    last = len(ids) - 1
    first = fresh.capture(ids, [last])
    assert len(fresh.cache) == len(ids)
    calls = []
    handle = fresh.target.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        again = fresh.capture(ids, [3, 7, last])
    finally:
        handle.remove()
    assert calls == []
    assert torch.equal(again[2], first[0])
    reference = fresh.target.capture(ids, fresh.layer)
    assert torch.allclose(again[:2], reference[[3, 7]], atol=1e-6)


def test_a_reply_is_truncated_only_when_the_token_limit_ends_it(engine):
    from workers.nla.decode import DecodeSpec, generate
    from workers.nla.target import REPLY_REPETITION_PENALTY, _template_ids

    turns = [ChatTurn("user", "My cat loves to sleep")]
    tokenizer = engine.target.tokenizer
    prompt = torch.tensor([_template_ids(tokenizer, turns, True)])
    spec = DecodeSpec(max_new_tokens=4, repetition_penalty=REPLY_REPETITION_PENALTY)
    (greedy,) = generate(engine.target.model, tokenizer, spec, input_ids=prompt)
    settings = GenerationSettings(temperature=0.0, max_new_tokens=4)
    unused = next(i for i in range(len(tokenizer)) if i not in greedy.token_ids)
    eos = tokenizer.eos_token_id
    try:
        tokenizer.eos_token_id = unused  # nothing ends it but the limit
        assert engine.reply(turns, settings, lambda text: None).truncated
        tokenizer.eos_token_id = greedy.token_ids[1]  # the model's 2nd token ends it
        ended = engine.reply(turns, settings, lambda text: None)
    finally:
        tokenizer.eos_token_id = eos
    assert not ended.truncated
    assert ended.text == tokenizer.decode(greedy.token_ids[:1], skip_special_tokens=True).strip()


def test_a_continued_reply_starts_with_its_text_and_the_model_writes_on_from_it(engine):
    from workers.nla.decode import DecodeSpec, generate
    from workers.nla.target import REPLY_REPETITION_PENALTY, _template_ids

    turns = [ChatTurn("user", "My cat loves to sleep")]
    tokenizer = engine.target.tokenizer
    open_turn = _template_ids(
        tokenizer, [*turns, ChatTurn("assistant", "A cat")], True, open_last=True
    )
    closed = engine.tokenize([*turns, ChatTurn("assistant", "A cat")]).token_ids
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert closed[: len(open_turn)] == open_turn and open_turn[-1] != end  # the turn is left open
    streamed: list[str] = []
    reply = engine.reply(
        turns,
        GenerationSettings(temperature=0.0, max_new_tokens=5),
        streamed.append,
        prefix="A cat",
    )
    spec = DecodeSpec(max_new_tokens=5, repetition_penalty=REPLY_REPETITION_PENALTY,
                      end_ids=frozenset([tokenizer.eos_token_id]))  # fmt: skip
    (expected,) = generate(
        engine.target.model, tokenizer, spec, input_ids=torch.tensor([open_turn])
    )
    assert reply.text == ("A cat" + expected.text).rstrip()
    assert all(text.startswith("A cat") for text in streamed)
