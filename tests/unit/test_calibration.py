"""Issue 14.2: the confidence pill on the source's own scale, its sentence where it and specificity
point different ways, and the generic flag (pure functions, hand-computed cases)."""

from __future__ import annotations

import pytest

from nlaweb.explanations.generic import generic_count, normalised, repeats
from workers.nla.calibration import Calibration, calibration_from, judge, place
from workers.nla.scoring import confidence
from workers.source_config import parse_sources

DEMO = Calibration(matched=1.0, shuffled=1.6, basis="demo build")


@pytest.mark.parametrize(
    ("relative_mse", "where", "pill"),
    [
        (0.9, "matched", "high"),
        (1.0, "matched", "high"),  # at the matched median
        (1.2, "between", "medium"),  # less than halfway (1.3)
        (1.3, "between", "low"),  # halfway
        (1.6, "shuffled", "low"),
        (2.5, "shuffled", "low"),
    ],
)
def test_a_score_is_placed_between_the_sources_matched_and_shuffled_medians(
    relative_mse, where, pill
):
    assert place(relative_mse, DEMO) == where
    verdict = judge(relative_mse, None, DEMO)
    assert (verdict.place, verdict.confidence, verdict.note) == (where, pill, "")


def test_a_demo_score_that_neuronpedias_thresholds_call_low_reads_high_on_its_own_scale():
    assert confidence(0.92) == "low"  # fixed thresholds: anything from 0.5 is low
    assert confidence(0.92, 0.97, DEMO) == "high"


def test_without_a_calibration_the_fixed_thresholds_and_the_specificity_cap_stay():
    assert [confidence(r, 0.9) for r in (0.2, 0.4, 0.6)] == ["high", "medium", "low"]
    assert confidence(0.2, 0.6) == "medium" and confidence(0.2, 0.3) == "low"
    assert judge(0.2, None, None).note == ""


def test_a_good_rebuild_capped_by_low_specificity_says_why():
    verdict = judge(0.05, 0.4, DEMO)  # a template token: near the average, any text rebuilds it
    assert verdict.confidence == "low"
    assert "60% of the reference explanations rebuild it about as well" in verdict.note


def test_a_low_pill_beside_a_high_specificity_says_why():
    verdict = judge(1.7, 0.97, DEMO)
    assert (verdict.confidence, verdict.place) == ("low", "shuffled")
    assert verdict.note.startswith("More specific than 97% of the reference explanations, yet low")
    assert "typical matching explanations of this source score 1.00" in verdict.note
    assert "the fixed thresholds call anything from 0.5 low" in judge(0.9, 0.97, None).note


def test_a_reconstructor_that_does_not_separate_reads_low_with_its_figures():
    verdict = judge(0.5, 0.99, Calibration(1.6, 1.5))
    assert verdict.confidence == "low"
    assert (
        "does not tell matching from shuffled explanations (median relative MSE 1.60 vs 1.50)"
        in (verdict.note)
    )


def test_a_calibration_needs_both_figures_as_numbers():
    assert calibration_from({"matched_median": 1.0, "shuffled_median": 1.6}) == Calibration(
        1.0, 1.6
    )
    for block in (None, {}, {"matched_median": 1.0}, {"matched_median": "1", "shuffled_median": 2}):
        assert calibration_from(block) is None


def test_a_source_can_carry_its_checkpoints_published_figures():
    (source,) = parse_sources(
        '[[source]]\nid = "q"\ntarget = "t"\nav = "a"\nar = "r"\n'
        'calibration_matched = 0.3\ncalibration_shuffled = 1\ncalibration_basis = "paper, table 2"\n'
    )
    assert source.calibration == Calibration(0.3, 1.0, "paper, table 2")
    (plain,) = parse_sources('[[source]]\nid = "q"\ntarget = "t"\nav = "a"\nar = "r"\n')
    assert plain.calibration is None


def test_one_text_on_many_tokens_of_a_message_is_generic():
    samsung = "Samsung is a Chinese company."
    texts = [samsung] * 5 + ["samsung is a  chinese company"] + [f"text {i}" for i in range(18)]
    counts, explained = repeats(texts)
    assert explained == 24
    assert generic_count(samsung, counts, explained) == 6
    assert generic_count("text 3", counts, explained) == 0
    assert normalised(" Samsung is a Chinese company! ") == "samsung is a chinese company"


@pytest.mark.parametrize(
    ("shared", "others", "generic"),
    [(3, 12, 3), (2, 0, 0), (3, 13, 0)],  # 3 of 15 is 20%; 3 of 16 is under it; 2 is too few
)
def test_the_generic_rule_needs_three_tokens_and_a_fifth_of_the_message(shared, others, generic):
    texts = ["A cat."] * shared + [f"other {i}" for i in range(others)]
    counts, explained = repeats(texts)
    assert generic_count("A cat.", counts, explained) == generic
