"""Issue 14.3 without building a model: the demo AR samples its positions after the user header, and
an AR directory written by another recipe is recognised (and so rebuilt by prepare_demo)."""

from __future__ import annotations

from pathlib import Path

import yaml

from workers.nla.demo import RECIPE_VERSION, _ar_sidecar, ar_recipe, content_start
from workers.nla.sidecar import SIDECAR

TURN = ["<|im_start|>", "user", "\n", "Return", " the", " sum", ".", "<|im_end|>", "\n"]


def test_content_starts_after_the_header_every_training_text_shares():
    lead = ["<|im_start|>", "system", "\n", "You", " help", "<|im_end|>", "\n"]
    texts = lead + TURN
    start = content_start(texts, len(lead))
    assert texts[start] == "Return"
    assert start == len(lead) + 3


def test_the_recipe_of_an_ar_directory_is_read_from_its_sidecar(tmp_path: Path):
    assert ar_recipe(tmp_path) is None  # nothing built yet
    sidecar = _ar_sidecar([1, 2, 3], 0.44, {"matched_median": 1.0, "shuffled_median": 1.5})
    (tmp_path / SIDECAR).write_text(yaml.safe_dump(sidecar))
    assert ar_recipe(tmp_path) == RECIPE_VERSION == 2
    assert sidecar["nlaweb"]["calibration"]["matched_median"] == 1.0
    del sidecar["nlaweb"]["recipe"]  # a demo built before recipe versions existed
    (tmp_path / SIDECAR).write_text(yaml.safe_dump(sidecar))
    assert ar_recipe(tmp_path) == 1
