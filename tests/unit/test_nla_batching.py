"""Batched verbalization: a batch explains what one-by-one explaining does, streams each row's text,
and stops each row on its own stop string or end token."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
import torch

from tests.tiny_models import build_tiny_source
from workers.nla.decode import Decoded, DecodeSpec, _cut, _Rows, generate
from workers.nla.engine import NlaEngine
from workers.nla.inject import embeddings_with_injection, rescale
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress
from workers.nla.verbalizer import Verbalizer, extract_explanation

TURNS = [
    ChatTurn("user", "My cat loves to sleep on the warm windowsill in the afternoon."),
    ChatTurn("assistant", "A cat is a small animal."),
]
GREEDY = GenerationSettings(temperature=0, max_new_tokens=8)


class RecordingProgress:
    """An ExplainProgress that keeps every call."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, int, int]] = []
        self.texts: dict[int, list[str]] = {}

    def stage(self, name: str, done: int, total: int) -> None:
        self.stages.append((name, done, total))

    def text(self, index: int, text_so_far: str) -> None:
        self.texts.setdefault(index, []).append(text_so_far)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> NlaEngine:
    # The tiny Gemma-3 AV's greedy text depends on the injected vector (the Llama one barely does).
    source = build_tiny_source(tmp_path_factory.mktemp("gemma3"), "gemma3")
    return NlaEngine.load(source, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def token_ids(engine: NlaEngine) -> list[int]:
    return engine.tokenize(TURNS).token_ids


@pytest.fixture(scope="module")
def distinct_positions(engine: NlaEngine, token_ids: list[int]) -> list[int]:
    """Four positions whose greedy explanations differ from each other (found at test time)."""
    candidates = list(range(16))
    results = engine.explain(token_ids, candidates, GREEDY, NoProgress())
    chosen: dict[str, int] = {}
    for position, result in zip(candidates, results, strict=True):
        chosen.setdefault(result.raw_text, position)
    assert len(chosen) >= 4, "the tiny AV must tell at least four of these positions apart"
    return sorted(chosen.values())[:4]


def _texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """The text of every prefix of `ids`, as the decoder sees it after each token."""
    return [tokenizer.decode(ids[:n], skip_special_tokens=True) for n in range(1, len(ids) + 1)]


def _stop_string(tokenizer: Any, stopping: Decoded, other: Decoded) -> str:
    """A prefix text of `stopping` that `other` never contains, reached before `stopping` ends."""
    others = _texts(tokenizer, other.token_ids)
    for text in _texts(tokenizer, stopping.token_ids)[:-1]:
        if text.strip() and "\ufffd" not in text and not any(text in o for o in others):
            return text
    raise AssertionError("no stop string separates these two rows")


# A batch is what one by one is


def test_a_greedy_batch_of_four_positions_equals_each_position_explained_alone(
    engine, token_ids, distinct_positions
):
    batch = engine.explain(token_ids, distinct_positions, GREEDY, NoProgress())
    assert len({r.raw_text for r in batch}) == 4
    for position, together in zip(distinct_positions, batch, strict=True):
        [alone] = engine.explain(token_ids, [position], GREEDY, NoProgress())
        assert together.position == alone.position == position
        assert (together.raw_text, together.text, together.truncated) == (
            alone.raw_text,
            alone.text,
            alone.truncated,
        )
        assert together.fidelity.mse == pytest.approx(alone.fidelity.mse, rel=1e-4)
        assert together.l2_norm == pytest.approx(alone.l2_norm)


def test_explain_reports_each_tokens_id_text_and_early_position_warning(engine, token_ids):
    late = len(token_ids) - 3
    early, later = engine.explain(token_ids, [2, late], GREEDY, NoProgress())
    assert (early.token_id, later.token_id) == (token_ids[2], token_ids[late])
    assert later.token_text == engine.target.tokenizer.decode([token_ids[late]])
    assert "Early position" in early.warnings[0]
    assert later.warnings == []


def test_each_row_streams_its_own_text_and_ends_on_its_result(
    engine, token_ids, distinct_positions
):
    progress = RecordingProgress()
    results = engine.explain(token_ids, distinct_positions, GREEDY, progress)
    assert sorted(progress.texts) == [0, 1, 2, 3]
    for index, result in enumerate(results):
        streamed = progress.texts[index]
        assert 1 <= len(streamed) <= GREEDY.max_new_tokens
        assert streamed[-1] == result.raw_text
    assert [name for name, _, _ in progress.stages] == ["capturing", "verbalizing", "scoring"]
    assert all(total == 4 for _, _, total in progress.stages)


# Per-row stops


def test_a_row_stops_at_its_stop_string_while_the_other_row_keeps_generating(engine, token_ids):
    model, tokenizer = engine.target.model, engine.target.tokenizer
    prompts = torch.tensor([token_ids[:20], token_ids[6:26]])
    free = generate(model, tokenizer, DecodeSpec(max_new_tokens=8), input_ids=prompts)
    assert free[0].text != free[1].text
    stop = _stop_string(tokenizer, free[0], free[1])
    spec = DecodeSpec(max_new_tokens=8, stop_strings=(stop,))
    stopped, running = generate(model, tokenizer, spec, input_ids=prompts)
    assert stopped.stopped and stopped.text.endswith(stop)
    assert len(stopped.token_ids) < len(free[0].token_ids)
    assert stopped.token_ids == free[0].token_ids[: len(stopped.token_ids)]
    assert not running.stopped
    assert (running.token_ids, running.text) == (free[1].token_ids, free[1].text)


def test_a_row_stops_at_an_end_token_and_keeps_it_out_of_its_text(engine, token_ids):
    model, tokenizer = engine.target.model, engine.target.tokenizer
    prompts = torch.tensor([token_ids[:20], token_ids[6:26]])
    free = generate(model, tokenizer, DecodeSpec(max_new_tokens=6), input_ids=prompts)
    end = free[0].token_ids[2]
    assert end not in free[0].token_ids[:2] and end not in free[1].token_ids
    spec = DecodeSpec(max_new_tokens=6, end_ids=frozenset([end]))
    ended, running = generate(model, tokenizer, spec, input_ids=prompts)
    assert ended.stopped and ended.token_ids == free[0].token_ids[:2]
    assert running == free[1]


def _stop_steps(runs: list[Decoded], end_ids: frozenset[int]) -> list[int | None]:
    """The step at which each free run generates one of `end_ids` first (None: never)."""
    return [next((i for i, t in enumerate(r.token_ids) if t in end_ids), None) for r in runs]


def _staggered_end_ids(runs: list[Decoded]) -> frozenset[int]:
    """End tokens that stop at least three rows at three different steps while another row is still
    generating after the second of those stops (found in the free runs, so fixed for these models)."""
    candidates = sorted({t for r in runs for t in r.token_ids})
    for size in (1, 2, 3):
        for chosen in itertools.combinations(candidates, size):
            steps = _stop_steps(runs, frozenset(chosen))
            stopped = sorted({s for s in steps if s is not None})
            later = [s for s in steps if s is None or (len(stopped) > 1 and s > stopped[1])]
            if len(stopped) >= 3 and len([s for s in steps if s is not None]) >= 3 and later:
                return frozenset(chosen)
    raise AssertionError(f"no end tokens stagger these rows: {[r.token_ids for r in runs]}")


def test_rows_that_stop_at_different_steps_each_equal_their_own_unbatched_run(engine, token_ids):
    """After two rows have left the batch at different steps, every row still gets its own tokens,
    its own repetition penalty and its own streamed text."""
    model, tokenizer = engine.target.model, engine.target.tokenizer
    prompts = [token_ids[start : start + 16] for start in (0, 4, 8, 12, 16)]
    free_spec = DecodeSpec(max_new_tokens=10, repetition_penalty=1.3)
    free = [generate(model, tokenizer, free_spec, input_ids=torch.tensor([p]))[0] for p in prompts]
    spec = dataclasses.replace(free_spec, end_ids=_staggered_end_ids(free))

    def run(rows: list[list[int]]) -> tuple[list[Decoded], dict[int, list[str]]]:
        streamed: dict[int, list[str]] = {}
        out = generate(
            model,
            tokenizer,
            spec,
            input_ids=torch.tensor(rows),
            on_text=lambda row, text: streamed.setdefault(row, []).append(text),
        )
        return out, streamed

    alone = [run([p]) for p in prompts]
    steps = [len(decoded.token_ids) for [decoded], _ in alone]
    stopped = [decoded.stopped for [decoded], _ in alone]
    assert sum(stopped) >= 3 and len({n for n, s in zip(steps, stopped) if s}) >= 3, steps
    batched, streamed = run(prompts)
    for row, ([decoded], own_stream) in enumerate(alone):
        assert batched[row] == decoded, f"row {row} (stops after {steps})"
        assert streamed.get(row, []) == own_stream.get(0, []), f"row {row} streamed another's text"


def test_the_verbalizer_marks_a_row_ended_by_its_stop_string_as_not_truncated(
    engine, token_ids, distinct_positions
):
    verbalizer = engine.verbalizer
    vectors = engine.capture(token_ids, distinct_positions[:2])
    injected = rescale(vectors, verbalizer.meta.injection_scale)
    prompt = verbalizer.prompt.expand(2, -1)
    embeds = embeddings_with_injection(verbalizer.model, prompt, verbalizer.marker, injected)
    spec = DecodeSpec(max_new_tokens=8, end_ids=verbalizer.end_ids)
    free = generate(verbalizer.model, verbalizer.tokenizer, spec, inputs_embeds=embeds)
    stop = _stop_string(verbalizer.tokenizer, free[0], free[1])
    meta = dataclasses.replace(verbalizer.meta, stop_strings=(stop,))
    stopping = Verbalizer(
        verbalizer.model,
        verbalizer.tokenizer,
        meta,
        verbalizer.prompt[0].tolist(),
        verbalizer.marker,
    )
    first, second = stopping.verbalize(vectors, GREEDY)
    assert not first.truncated and first.raw_text.endswith(stop)
    assert second.truncated and second.raw_text == free[1].text


def test_sampling_with_the_same_seed_repeats_and_another_seed_differs(engine, token_ids):
    vectors = engine.capture(token_ids, [20])
    warm = GenerationSettings(temperature=0.7, max_new_tokens=8, seed=1)
    [a] = engine.verbalizer.verbalize(vectors, warm)
    [b] = engine.verbalizer.verbalize(vectors, warm)
    [c] = engine.verbalizer.verbalize(vectors, dataclasses.replace(warm, seed=2))
    assert a == b
    assert a.raw_text != c.raw_text


# The pieces: cutting at stop strings, per-row bookkeeping, extracting the explanation


def test_cut_keeps_text_up_to_and_including_the_earliest_stop_string():
    assert _cut("a cat</explanation> more", ["</explanation>"]) == "a cat</explanation>"
    assert _cut("x STOP y END", ["END", "STOP"]) == "x STOP"
    assert _cut("no stop here", ["</explanation>"]) is None
    assert _cut("anything", []) is None


def test_rows_stop_one_at_a_time_and_report_each_rows_text(engine):
    tokenizer = engine.verbalizer.tokenizer
    seen: list[tuple[int, str]] = []
    spec = DecodeSpec(max_new_tokens=50, stop_strings=("</explanation>",), end_ids=frozenset([4]))
    rows = _Rows(2, tokenizer, spec, lambda row, text: seen.append((row, text)))
    text = "<explanation>The text is about animals.</explanation> Paris"
    for token in tokenizer.encode(text, add_special_tokens=False):
        if not rows.stopped[0]:
            rows.add(0, token)
    rows.add(1, tokenizer.encode(" cat", add_special_tokens=False)[0])
    rows.add(1, 4)
    [first, second] = rows.result()
    assert first.text == "<explanation>The text is about animals.</explanation>"
    assert first.stopped and second.stopped
    assert tokenizer.decode(first.token_ids).startswith(first.text)
    assert second.token_ids == tokenizer.encode(" cat", add_special_tokens=False)[:1]
    assert seen[-1][0] == 1 and [row for row, _ in seen].count(1) == 1
    assert seen[-2] == (0, first.text)


def test_extract_explanation_reads_a_tagged_explanation():
    raw = "<explanation>\n A cat.\n\nFinal token ' cat' continues a noun phrase. \n</explanation>"
    assert extract_explanation(raw) == "A cat.\n\nFinal token ' cat' continues a noun phrase."


def test_extract_explanation_keeps_the_rest_of_an_unclosed_explanation():
    assert extract_explanation("<explanation> The text is about ani") == "The text is about ani"


def test_extract_explanation_returns_untagged_text_stripped():
    assert extract_explanation("  A cat is a domesticated animal.\n") == (
        "A cat is a domesticated animal."
    )


def test_extract_explanation_ignores_text_around_the_tags():
    raw = "Sure. <explanation>Animals.</explanation> trailing"
    assert extract_explanation(raw) == "Animals."


def test_the_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    from workers.nla.decode import _penalise

    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, 1.0, 1.0]])
    out = _penalise(logits, [[0, 1, 1], []], 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0], [1.0, 1.0, 1.0, 1.0]]
    assert logits[0, 0] == 2.0  # the input is left as it was
    assert _penalise(logits, [[0], [1]], 1.0) is logits


def test_cjk_text_or_a_mention_of_the_marker_is_flagged_as_a_failed_injection():
    from workers.nla.verbalizer import injection_suspect

    assert injection_suspect("这是一个关于猫的解释", "㈎")
    assert injection_suspect("The token ㈎ is a Korean symbol.", "㈎")
    assert injection_suspect("A note about 고양이", "㈎")
    assert not injection_suspect("A cat sleeping on a warm windowsill.", "㈎")
    assert not injection_suspect("Empty output here.", "<empty_output>")  # a multi-char marker


def test_positions_of_several_conversations_share_one_batch_and_come_back_per_conversation(
    engine, token_ids, distinct_positions
):
    other = engine.tokenize([ChatTurn("user", "The dog runs in the park.")]).token_ids
    requests = [(token_ids, distinct_positions[:2]), (other, [4, 6, 9])]
    progress = RecordingProgress()
    batched = engine.explain_batch(requests, GREEDY, progress)
    assert [[r.position for r in group] for group in batched] == [distinct_positions[:2], [4, 6, 9]]
    alone = [engine.explain(ids, ps, GREEDY, NoProgress()) for ids, ps in requests]
    assert [[r.text for r in g] for g in batched] == [[r.text for r in g] for g in alone]
    assert [r.token_id for r in batched[1]] == [other[4], other[6], other[9]]
    assert sorted(progress.texts) == [0, 1, 2, 3, 4]  # one AV batch of five rows
    assert [s for s in progress.stages if s[0] == "verbalizing"] == [("verbalizing", 0, 5)]


def test_a_shared_batch_is_limited_to_16_positions_in_all():
    from workers.nla.engine import _check_count
    from workers.nla.errors import InputTooLong

    _check_count(16)
    with pytest.raises(InputTooLong, match="this one asked for 17"):
        _check_count(17)
