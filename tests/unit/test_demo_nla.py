"""The quick start's demo NLA: built from the packaged GGUF, written in the published checkpoint
format, loaded back by the loader real checkpoints use, and verbalizing a real activation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from workers.nla.demo import LAYER, DemoPlan, build_demo
from workers.nla.engine import NlaEngine
from workers.nla.reference_pool import POOL_FILE
from workers.nla.types import ChatTurn, GenerationSettings, NoProgress
from workers.source_config import demo_paths, demo_source

pytestmark = pytest.mark.slow

SMALL = DemoPlan(docs=12, per_doc=3, batch=36)
SENTENCE = "My cat loves to sleep on the warm windowsill in the afternoon."


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo-data")
    build_demo(data_dir, progress=lambda line: None, plan=SMALL)
    return data_dir


@pytest.fixture(scope="module")
def engine(demo_dir: Path) -> NlaEngine:
    return NlaEngine.load(demo_source(demo_dir), device="cpu")


def test_the_demo_is_written_in_the_published_checkpoint_format(demo_dir):
    target, av, ar = demo_paths(demo_dir)
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()
    av_meta = yaml.safe_load((av / "nla_meta.yaml").read_text())
    assert (av_meta["kind"], av_meta["role"], av_meta["d_model"]) == ("nla_model", "av", 576)
    assert av_meta["extraction"] == {"injection_scale": None, "injection_layer": LAYER}
    assert av_meta["tokens"]["injection_token_id"] == 16  # <empty_output>
    ar_meta = yaml.safe_load((ar / "nla_meta.yaml").read_text())
    assert ar_meta["critic"]["extraction_layer_index"] == LAYER
    assert yaml.safe_load((ar / "config.json").read_text())["num_hidden_layers"] == LAYER + 1
    assert load_file(str(ar / "value_head.safetensors"))["weight"].shape == (576, 576)
    heldout = ar_meta["nlaweb"]["heldout"]
    assert heldout["pairs_train"] + heldout["pairs_heldout"] == SMALL.docs * SMALL.per_doc
    assert ar_meta["nlaweb"]["var_baseline"] > 0
    pool = load_file(str(ar / POOL_FILE))["predictions"]
    assert (pool.shape, pool.dtype) == ((heldout["pairs_heldout"], 576), torch.float32)


def test_the_demo_engine_starts_from_the_held_out_reference_pool(engine, demo_dir):
    _, _, ar = demo_paths(demo_dir)
    assert len(engine.pool) == load_file(str(ar / POOL_FILE))["predictions"].shape[0] == 8
    assert engine.pool.against(None).shape == (0, 576)  # SMALL holds out 8 pairs, fewer than 32


def test_a_second_build_rebuilds_nothing(demo_dir):
    files = [p for p in demo_dir.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    lines: list[str] = []
    build_demo(demo_dir, progress=lines.append, plan=SMALL)
    assert all("present" in line for line in lines), lines
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_the_demo_engine_captures_what_output_hidden_states_reports(engine):
    tokens = engine.tokenize([ChatTurn("user", SENTENCE)]).token_ids
    captured = engine.capture(tokens, list(range(len(tokens))))
    with torch.no_grad():
        reference = engine.target.model(torch.tensor([tokens]), output_hidden_states=True)
    assert torch.equal(captured, reference.hidden_states[LAYER + 1][0].float())


def test_the_demo_verbalizer_describes_the_cat_token_as_a_cat(engine):
    conversation = engine.tokenize([ChatTurn("user", SENTENCE)])
    position = conversation.token_texts.index(" cat")
    [result] = engine.explain(
        conversation.token_ids, [position], GenerationSettings(), NoProgress()
    )
    assert result.token_text == " cat"
    assert "cat" in result.text.lower(), result.raw_text
    assert 0.0 <= result.fidelity.mse <= 4.0 and result.fidelity.relative_mse is not None


def test_the_demo_prepare_command_needs_the_packaged_gguf():
    from workers.nla.demo import gguf_location

    directory, name = gguf_location()
    assert (directory / name).is_file() and os.path.getsize(directory / name) > 50_000_000


def test_two_builds_write_the_same_reconstructor(demo_dir, tmp_path):
    import shutil

    target, av, ar = demo_paths(demo_dir)
    again_target, again_av, again_ar = demo_paths(tmp_path)
    shutil.copytree(target, again_target)  # skip the conversion: the AR fit is what could drift
    shutil.copytree(av, again_av)
    build_demo(tmp_path, progress=lambda line: None, plan=SMALL)
    for name in ("value_head.safetensors", "nla_meta.yaml", POOL_FILE):
        assert (again_ar / name).read_bytes() == (ar / name).read_bytes(), name


def test_a_demo_built_before_the_reference_pool_gains_only_the_pool(demo_dir, tmp_path):
    import shutil

    shutil.copytree(demo_dir / "demo", tmp_path / "demo")
    _, _, ar = demo_paths(tmp_path)
    (ar / POOL_FILE).unlink()
    files = [p for p in (tmp_path / "demo").rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    lines: list[str] = []
    build_demo(tmp_path, progress=lines.append, plan=SMALL)
    assert [line.split(":")[0] for line in lines if "present" in line] == [
        "target model present",
        "demo AV present",
        "demo AR present",
    ]
    assert {p: p.stat().st_mtime_ns for p in files} == before
    original = demo_paths(demo_dir)[2] / POOL_FILE
    assert (ar / POOL_FILE).read_bytes() == original.read_bytes()
    assert not list(ar.glob("*.partial"))


def test_the_starter_prompts_get_replies_that_name_what_they_ask_about(engine):
    """The prompts a new conversation offers were picked because the demo model answers them with
    concrete things worth clicking; replay each with the page's decoding (greedy)."""
    from nlaweb.chat.starters import DEMO_STARTERS_CHECK

    for prompt, word in DEMO_STARTERS_CHECK.items():
        reply = engine.reply(
            [ChatTurn("user", prompt)],
            GenerationSettings(temperature=0.0, max_new_tokens=40),
            lambda text: None,
        )
        assert word in reply.text, (prompt, reply.text)


def test_an_ar_built_by_an_older_recipe_is_rebuilt_with_the_pool(demo_dir):
    """Last in this module: it rewrites the AR of the shared build."""
    _, _, ar = demo_paths(demo_dir)
    meta = yaml.safe_load((ar / "nla_meta.yaml").read_text())
    del meta["nlaweb"]["recipe"]
    (ar / "nla_meta.yaml").write_text(yaml.safe_dump(meta))
    lines: list[str] = []
    build_demo(demo_dir, progress=lines.append, plan=SMALL)
    assert "demo AR was built by recipe 1; rebuilding it with recipe 2" in lines
    assert any(line.startswith("target model present") for line in lines)
    rebuilt = yaml.safe_load((ar / "nla_meta.yaml").read_text())["nlaweb"]
    assert rebuilt["recipe"] == 2 and (ar / POOL_FILE).is_file()
    calibration = rebuilt["calibration"]
    assert calibration["matched_median"] == rebuilt["heldout"]["matched_median"]
