"""The autointerp scorers' arithmetic on hand-computed values, and the real sentence embedder."""

from __future__ import annotations

import math

import pytest

from workers.nla.autointerp import autointerp_scores, cosine, last_paragraph


def test_cosine_of_hand_picked_vectors():
    assert cosine([1.0, 0.0], [0.0, 2.0]) == 0.0
    assert cosine([3.0, 4.0], [6.0, 8.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))
    assert cosine([1.0, 2.0, 2.0], [-1.0, -2.0, -2.0]) == pytest.approx(-1.0)
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0  # the zero vector scores 0, not NaN


def test_cosine_refuses_vectors_of_different_lengths():
    with pytest.raises(ValueError, match="lengths 2 and 3"):
        cosine([1.0, 0.0], [1.0, 0.0, 0.0])


def test_the_last_paragraph_is_the_last_block_after_a_blank_line():
    assert last_paragraph("First idea.\n\nSecond idea.\n\n  Third idea.  \n") == "Third idea."
    assert last_paragraph("One line\nand another") == "One line\nand another"
    assert last_paragraph("Text.\n\n\n\n") == "Text."
    assert last_paragraph("") == ""


def test_the_three_scores_use_the_right_pairs():
    # AR(label) = (1, 1, 0) against the vector (1, 0, 0): cos = 1/√2.
    # Embeddings: label (1, 0), whole text (0.6, 0.8): cos = 0.6; last paragraph (0, 1): cos = 0.
    scores = autointerp_scores([1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0])
    assert scores.nla_reconstructor == pytest.approx(1 / math.sqrt(2))
    assert scores.nla_verbalizer == pytest.approx(0.6)
    assert scores.nla_verbalizer_last == 0.0


def test_the_packaged_sentence_embedder_loads_offline_and_ranks_paraphrases_first():
    from workers.nla.embedder import embed

    label, paraphrase, unrelated = embed(["a cat sleeps", "a kitten naps", "stock market prices"])
    assert len(label) == 384
    assert sum(x * x for x in label) == pytest.approx(1.0, abs=1e-5)
    assert cosine(label, paraphrase) > 0.5 > cosine(label, unrelated)
