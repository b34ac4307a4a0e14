"""Specificity: the rank of an explanation's reconstruction among a reference pool's, on vectors
whose errors are computed by hand; the pool's file, ring and same-snapshot rule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from workers.nla.errors import CheckpointIncompatible
from workers.nla.reference_pool import (
    MIN_POOL,
    POOL_FILE,
    POOL_SIZE,
    ReferencePool,
    same_snapshot,
    token_prefix,
)
from workers.nla.specificity import specificity, squared_errors

SQRT_2 = math.sqrt(2.0)
EAST, NORTH, WEST, SOUTH = (
    torch.tensor(v) for v in ([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0])
)


def _rows(*vectors: torch.Tensor) -> torch.Tensor:
    return torch.stack(list(vectors))


# -- the rank ---------------------------------------------------------------------------------------
def test_squared_errors_are_the_mean_squared_differences():
    rows = _rows(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5]))
    # (1−3)² + (2−1)² = 5 → 2.5;  (−1−3)² + (0.5−1)² = 16.25 → 8.125
    assert squared_errors(rows, torch.tensor([3.0, 1.0])).tolist() == pytest.approx([2.5, 8.125])


def test_an_exact_reconstruction_is_more_specific_than_the_whole_pool():
    # At norm √2, a = (√2, 0); north and south miss by mse 2, west by 4; p = a misses by 0.
    assert specificity(EAST, 5.0 * EAST, _rows(NORTH, WEST, SOUTH), SQRT_2) == 1.0


def test_a_reconstruction_worse_than_every_other_ranks_zero():
    assert specificity(WEST, EAST, _rows(NORTH, SOUTH, EAST), SQRT_2) == 0.0


def test_a_diagonal_reconstruction_beats_the_pool_members_it_is_closer_than():
    # p = (1, 1)/√2·√2 = (1, 1): mse((1,1), (√2,0)) = ((1−√2)² + 1)/2 = 2 − √2 ≈ 0.586, below the
    # pool's 2, 4 and 2 but above a pool member equal to a (0).
    pool = _rows(NORTH, WEST, SOUTH, EAST)
    assert specificity(torch.tensor([1.0, 1.0]), EAST, pool, SQRT_2) == 0.75


def test_ties_count_half():
    # p = north: mse 2 against a = east, tied with north and south, better than west (4).
    pool = _rows(NORTH, WEST, SOUTH)
    assert specificity(NORTH, EAST, pool, SQRT_2) == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_a_prediction_that_fits_any_activation_as_well_as_the_others_ranks_half():
    """Predictions m ± e_k all sit at the same distance from an activation at the mean m: the text
    tells nothing about this activation, and the tie rule puts it at 0.5, not 0 or 1."""
    mean = torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0])
    steps = torch.eye(5)[1:]
    pool = torch.cat([mean + steps, mean - steps])
    assert specificity(mean + steps[0], mean, pool, None) == 0.5


def test_a_prediction_drawn_like_the_pool_ranks_near_half_on_average():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(64, generator=generator)
    ranks = []
    for _ in range(200):
        pool = mean + 0.3 * torch.randn(128, 64, generator=generator)
        predicted = mean + 0.3 * torch.randn(64, generator=generator)
        activation = mean + 0.1 * torch.randn(64, generator=generator)
        ranks.append(specificity(predicted, activation, pool, 8.0))
    assert sum(ranks) / len(ranks) == pytest.approx(0.5, abs=0.05)  # type: ignore[arg-type]


def test_the_rank_compares_directions_at_the_mse_scale_not_raw_lengths():
    # Normalised, 10·east is a = east exactly; raw, it misses by 81/2 and north and south by 1.
    assert specificity(10.0 * EAST, EAST, _rows(NORTH, SOUTH), SQRT_2) == 1.0
    assert specificity(10.0 * EAST, EAST, _rows(NORTH, SOUTH), None) == 0.0


def test_an_empty_pool_gives_no_specificity():
    assert specificity(EAST, EAST, torch.empty(0, 2), SQRT_2) is None


# -- the pool ---------------------------------------------------------------------------------------
def _pool(minimum: int = 2, size: int = POOL_SIZE) -> ReferencePool:
    return ReferencePool(2, size=size, minimum=minimum)


def test_a_pool_with_fewer_eligible_entries_than_its_minimum_gives_none():
    pool = _pool(minimum=3)
    pool.add(_rows(NORTH, SOUTH), [None, None])
    assert pool.against(None).shape == (0, 2)
    assert specificity(EAST, EAST, pool.against(None), SQRT_2) is None
    pool.add(_rows(WEST), [None])
    assert torch.equal(pool.against(None), _rows(NORTH, SOUTH, WEST))


def test_the_default_minimum_is_32_entries():
    assert MIN_POOL == 32 and ReferencePool(2).minimum == MIN_POOL


def test_the_ring_keeps_the_last_entries():
    pool = _pool(size=3)
    pool.add(torch.arange(10.0).reshape(5, 2), [None] * 5)
    assert len(pool) == 3
    assert pool.against(None).tolist() == [[4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]


def test_entries_of_the_same_snapshot_are_left_out():
    snapshot = [1, 2, 3, 4, 5]
    other = [1, 2, 9, 9]
    pool = _pool(minimum=1)
    pool.add(
        _rows(NORTH, SOUTH, WEST, EAST),
        [
            token_prefix(snapshot[:4]),  # a token of this snapshot
            token_prefix(snapshot[:2]),  # a token of the shared preamble
            token_prefix(other[:3]),  # another conversation after the preamble
            token_prefix(other[:4]),
        ],
    )
    assert torch.equal(pool.against(token_prefix(snapshot)), _rows(WEST, EAST))
    # A later snapshot that extends this one leaves out what was explained in it too.
    assert torch.equal(pool.against(token_prefix([*snapshot, 7, 8])), _rows(WEST, EAST))
    # An earlier snapshot leaves out what was explained past its end in a snapshot extending it.
    assert torch.equal(pool.against(token_prefix(other[:3])), _rows(NORTH))


def test_same_snapshot_compares_the_common_length_of_token_ids():
    assert same_snapshot(token_prefix([5, 6]), token_prefix([5, 6, 7]))
    assert same_snapshot(token_prefix([5, 6, 7]), token_prefix([5, 6]))
    assert not same_snapshot(token_prefix([5, 6]), token_prefix([5, 7, 7]))
    assert not same_snapshot(token_prefix([256]), token_prefix([1]))  # whole ids, not bytes
    assert not same_snapshot(None, token_prefix([5])) and not same_snapshot(token_prefix([5]), None)


def test_the_pool_file_seeds_the_pool_and_rolls_out(tmp_path: Path):
    predictions = torch.randn(40, 2)
    save_file({"predictions": predictions}, str(tmp_path / POOL_FILE))
    pool = ReferencePool.from_checkpoint(tmp_path, 2)
    assert torch.equal(pool.against(token_prefix([1, 2])), predictions)
    pool.add(torch.zeros(POOL_SIZE, 2), [token_prefix([9])] * POOL_SIZE)
    assert torch.equal(pool.against(None), torch.zeros(POOL_SIZE, 2))


def test_a_checkpoint_without_a_pool_file_starts_empty(tmp_path: Path):
    assert len(ReferencePool.from_checkpoint(tmp_path, 2)) == 0


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"weight": torch.zeros(3, 2)}, "'predictions' does not match"),
        ({"predictions": torch.zeros(3, 5)}, "expected '[N, 2]', found [3, 5]"),
        ({"predictions": torch.zeros(POOL_SIZE + 1, 2)}, "holds 257 predictions; a reference pool"),
    ],
)
def test_a_malformed_pool_file_is_refused_with_its_reason(tmp_path: Path, tensors, message):
    save_file(tensors, str(tmp_path / POOL_FILE))
    with pytest.raises(CheckpointIncompatible, match=message.replace("[", r"\[")):
        ReferencePool.from_checkpoint(tmp_path, 2)
