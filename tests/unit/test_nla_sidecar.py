"""The checkpoint contract of `nla_meta.yaml`: every check refuses a source broken in exactly that
one way with an error naming the field, the expected and the found value; aliases, older spellings,
unknown keys, scale conventions and source overrides are read as published."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_models import (
    AR_TEMPLATE,
    AV_TEMPLATE,
    D_MODEL,
    INJECTION_SCALE,
    LAYER,
    MARKER,
    build_tiny_source,
    build_tokenizer,
)
from workers.nla.engine import NlaEngine
from workers.nla.errors import CheckpointIncompatible
from workers.nla.sidecar import Overrides, parse_ar, parse_av

SQRT_D = math.sqrt(D_MODEL)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def marker_id(tokenizer: Any) -> int:
    return int(tokenizer.convert_tokens_to_ids(MARKER))


@pytest.fixture(scope="module")
def neighbours(tokenizer: Any, marker_id: int) -> tuple[int, int]:
    content = AV_TEMPLATE.replace("{injection_char}", MARKER)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    at = ids.index(marker_id)
    return ids[at - 1], ids[at + 1]


@pytest.fixture(scope="module")
def suffix(tokenizer: Any) -> list[int]:
    return list(tokenizer(AR_TEMPLATE.replace("{explanation}", "x"))["input_ids"][-3:])


@pytest.fixture
def broken(tmp_path: Path) -> Callable[..., CheckpointIncompatible]:
    """Load a tiny source with the given sidecar changes; returns the CheckpointIncompatible."""

    def load(**changes: Any) -> CheckpointIncompatible:
        source = build_tiny_source(tmp_path, **changes)
        with pytest.raises(CheckpointIncompatible) as caught:
            NlaEngine.load(source, device="cpu", dtype="float32")
        return caught.value

    return load


def assert_names(
    error: CheckpointIncompatible, field: str, expected: object, found: object
) -> None:
    assert (error.field, error.expected, error.found) == (field, expected, found)  # type: ignore[attr-defined]
    assert f"'{field}' does not match: expected {expected!r}, found {found!r}." in str(error)


def av_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "nla_model",
        "role": "av",
        "d_model": D_MODEL,
        "extraction": {"injection_scale": INJECTION_SCALE},
        "tokens": {"injection_char": MARKER, "injection_token_id": 386},
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
    }
    doc.update(changes)
    return doc


def ar_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "nla_model",
        "role": "ar",
        "d_model": D_MODEL,
        "extraction": {},
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
        "critic": {"extraction_layer_index": LAYER},
    }
    doc.update(changes)
    return doc


# A source broken in exactly one way is refused, naming what broke


def test_the_intact_tiny_source_loads(tmp_path):
    engine = NlaEngine.load(build_tiny_source(tmp_path), device="cpu", dtype="float32")
    assert engine.layer == LAYER
    assert engine.verbalizer.meta.injection_scale == INJECTION_SCALE


def test_it_rejects_an_injection_char_that_is_not_one_token(broken, marker_id, tokenizer):
    error = broken(av_changes={"tokens__injection_char": "cat"})
    assert_names(
        error,
        "tokens.injection_char",
        [marker_id],
        tokenizer.encode("cat", add_special_tokens=False),
    )


def test_it_rejects_an_injection_token_id_that_is_not_the_markers(broken, marker_id):
    error = broken(av_changes={"tokens__injection_token_id": marker_id - 1})
    assert_names(error, "tokens.injection_token_id", marker_id - 1, marker_id)


def test_it_rejects_a_prompt_that_holds_the_marker_twice(broken):
    twice = "Explain {injection_char} and {injection_char}."
    error = broken(av_changes={"prompt_templates__av": twice})
    assert_names(error, "tokens.injection_token_id", "exactly 1 occurrence in the prompt", 2)


def test_it_rejects_a_wrong_left_neighbour(broken, neighbours):
    error = broken(av_changes={"tokens__injection_left_neighbor_id": 7})
    assert_names(error, "tokens.injection_left_neighbor_id", 7, neighbours[0])


def test_it_rejects_a_wrong_right_neighbour(broken, neighbours):
    error = broken(av_changes={"tokens__injection_right_neighbor_id": 7})
    assert_names(error, "tokens.injection_right_neighbor_id", 7, neighbours[1])


def test_it_rejects_critic_suffix_ids_the_ar_prompt_does_not_end_with(broken, suffix):
    error = broken(ar_changes={"tokens__critic_suffix_ids": [5, 6, 7]})
    assert_names(error, "tokens.critic_suffix_ids", [5, 6, 7], suffix)


def test_it_rejects_an_ar_whose_layer_count_is_not_k_plus_1(broken):
    error = broken(ar_layers=LAYER)
    assert_names(error, "ar.num_hidden_layers", f"{LAYER + 1} (K + 1)", LAYER)


def test_it_rejects_an_av_sidecar_whose_role_is_ar(broken):
    error = broken(av_changes={"role": "ar"})
    assert_names(error, "role", "av", "ar")


def test_it_rejects_an_ar_sidecar_whose_role_is_actor(broken):
    error = broken(ar_changes={"role": "actor"})
    assert_names(error, "role", "ar", "actor")


def test_it_rejects_an_av_without_injection_scale(broken):
    error = broken(av_changes={"extraction__injection_scale": None})
    assert "required field 'extraction.injection_scale' is missing (null means raw)." in str(error)


def test_it_rejects_an_av_template_without_the_injection_char_placeholder(broken):
    error = broken(av_changes={"prompt_templates__av": "Explain the thought in words."})
    assert_names(
        error,
        "prompt_templates.av",
        "a template containing {injection_char}",
        "Explain the thought in words.",
    )


def test_it_rejects_an_ar_template_without_the_explanation_placeholder(broken):
    error = broken(ar_changes={"prompt_templates__ar": "Summary: <summary>"})
    assert_names(
        error, "prompt_templates.ar", "a template containing {explanation}", "Summary: <summary>"
    )


def test_it_rejects_a_d_model_that_is_not_the_checkpoints_width(broken):
    error = broken(av_changes={"d_model": 16})
    assert_names(error, "d_model", D_MODEL, 16)


def test_it_rejects_an_av_trained_at_another_layer_than_the_ar(broken):
    error = broken(av_changes={"extraction_layer_index": LAYER - 1})
    assert_names(error, "av layer", LAYER, LAYER - 1)


def test_it_rejects_an_injection_layer_past_the_last_block(broken):
    error = broken(av_changes={"extraction__injection_layer": 4})
    assert_names(error, "extraction.injection_layer", "< 4", 4)


def test_it_rejects_a_sidecar_of_another_kind(broken):
    error = broken(av_changes={"kind": "sae"})
    assert_names(error, "kind", "nla_model", "sae")


def test_it_rejects_an_ar_without_a_layer_and_says_how_to_give_one(broken):
    error = broken(ar_changes={"critic__extraction_layer_index": None})
    assert "the AR's layer is missing ('critic.extraction_layer_index')" in str(error)
    assert "give it as the source's 'layer'" in str(error)


# Aliases, older spellings, unknown keys


def test_a_schema_1_source_with_actor_and_critic_spellings_loads(tmp_path):
    source = build_tiny_source(
        tmp_path,
        av_changes={
            "role": "actor",
            "prompt_templates__av": None,
            "prompt_templates__actor": AV_TEMPLATE,
        },
        ar_changes={
            "role": "critic",
            "prompt_templates__ar": None,
            "prompt_templates__critic": AR_TEMPLATE,
            "critic__extraction_layer_index": None,
            "critic__num_hidden_layers": LAYER,
        },
    )
    engine = NlaEngine.load(source, device="cpu", dtype="float32")
    assert engine.layer == LAYER
    assert engine.verbalizer.meta.template == AV_TEMPLATE
    assert engine.reconstructor.meta.template == AR_TEMPLATE


def test_the_ar_layer_is_read_from_every_published_spelling():
    for spelling in (
        {"critic": {"extraction_layer_index": 5}},
        {"extraction_layer_index": 5, "critic": {}},
        {"extraction": {"layer_index": 5}, "critic": {}},
        {"critic": {"num_hidden_layers": 5}},
        {"ar": {"num_hidden_layers": 5}, "critic": {}},
    ):
        assert parse_ar(ar_doc(**spelling), "ar").layer == 5, spelling


def test_the_actor_and_critic_template_aliases_are_read():
    av = parse_av(av_doc(role="actor", prompt_templates={"actor": AV_TEMPLATE}), "av")
    ar = parse_ar(ar_doc(role="critic", prompt_templates={"critic": AR_TEMPLATE}), "ar")
    assert (av.template, ar.template) == (AV_TEMPLATE, AR_TEMPLATE)


def test_unknown_keys_are_ignored():
    extra = {
        "schema_version": 7,
        "stage": "rl",
        "training": {"steps": 1000, "new_thing": [1, 2]},
        "created_by": "someone",
    }
    av = parse_av(
        av_doc(**extra, tokens={"injection_char": MARKER, "injection_token_id": 386, "shiny": 1}),
        "av",
    )
    ar = parse_ar(ar_doc(**extra), "ar")
    assert av.injection_token_id == 386
    assert ar.layer == LAYER


# Scales


def test_an_absent_mse_scale_means_the_square_root_of_d_model():
    assert parse_ar(ar_doc(extraction={}), "ar").mse_scale == pytest.approx(SQRT_D)
    assert parse_ar(ar_doc(extraction=None), "ar").mse_scale == pytest.approx(SQRT_D)


def test_an_explicit_null_mse_scale_means_raw_vectors():
    assert parse_ar(ar_doc(extraction={"mse_scale": None}), "ar").mse_scale is None


def test_an_explicit_null_injection_scale_means_raw_vectors():
    assert parse_av(av_doc(extraction={"injection_scale": None}), "av").injection_scale is None


def test_sqrt_d_model_scales_resolve_to_the_square_root_of_d_model():
    av = parse_av(av_doc(extraction={"injection_scale": "sqrt_d_model"}), "av")
    ar = parse_ar(ar_doc(extraction={"mse_scale": "sqrt_d_model"}), "ar")
    assert av.injection_scale == pytest.approx(SQRT_D)
    assert ar.mse_scale == pytest.approx(SQRT_D)


def test_an_integer_injection_scale_is_read_as_a_float():
    av = parse_av(av_doc(extraction={"injection_scale": 80000}), "av")
    assert av.injection_scale == 80000.0 and isinstance(av.injection_scale, float)


def test_it_rejects_a_scale_that_is_neither_a_number_nor_sqrt_d_model():
    with pytest.raises(CheckpointIncompatible, match=re.escape("'extraction.injection_scale'")):
        parse_av(av_doc(extraction={"injection_scale": "large"}), "av")
    with pytest.raises(CheckpointIncompatible, match="a positive number"):
        parse_ar(ar_doc(extraction={"mse_scale": -1.0}), "ar")


def test_the_injection_layer_defaults_to_the_embedding_layer():
    assert parse_av(av_doc(), "av").injection_layer == 0


# Source overrides fill what the sidecar lacks


def test_overrides_fill_a_missing_injection_scale_layer_and_var_baseline():
    av = parse_av(av_doc(extraction={}), "av", Overrides(layer=LAYER, injection_scale=150.0))
    ar = parse_ar(ar_doc(critic={}), "ar", Overrides(layer=LAYER, var_baseline=0.73))
    assert (av.injection_scale, av.layer) == (150.0, LAYER)
    assert (ar.layer, ar.var_baseline) == (LAYER, 0.73)


def test_an_override_of_sqrt_d_model_and_of_the_mse_scale_are_applied():
    av = parse_av(av_doc(extraction={}), "av", Overrides(injection_scale="sqrt_d_model"))
    ar = parse_ar(ar_doc(), "ar", Overrides(mse_scale=2.5))
    assert av.injection_scale == pytest.approx(SQRT_D)
    assert ar.mse_scale == 2.5


def test_a_source_config_supplies_the_fields_its_sidecars_lack(tmp_path):
    source = build_tiny_source(
        tmp_path,
        av_changes={"extraction__injection_scale": None},
        ar_changes={"critic__extraction_layer_index": None, "nlaweb__var_baseline": None},
    )
    filled = dataclasses.replace(
        source, layer=LAYER, injection_scale=4.0, mse_scale=3.0, var_baseline=0.25
    )
    engine = NlaEngine.load(filled, device="cpu", dtype="float32")
    assert engine.layer == LAYER
    assert engine.verbalizer.meta.injection_scale == 4.0
    assert engine.reconstructor.meta.mse_scale == 3.0
    assert engine.reconstructor.meta.var_baseline == 0.25
    assert engine.info()["var_baseline"] == 0.25


def test_an_ar_without_a_var_baseline_has_none():
    assert parse_ar(ar_doc(), "ar").var_baseline is None


def test_a_negative_injection_layer_is_refused_naming_the_field():
    from workers.nla.errors import CheckpointIncompatible
    from workers.nla.sidecar import parse_av

    doc = {
        "kind": "nla_model",
        "role": "av",
        "d_model": 8,
        "extraction": {"injection_scale": 1.0, "injection_layer": -1},
        "tokens": {"injection_char": "x", "injection_token_id": 5},
        "prompt_templates": {"av": "a {injection_char} b"},
    }
    with pytest.raises(CheckpointIncompatible, match=r"'extraction\.injection_layer'.*found -1"):
        parse_av(doc, "av/nla_meta.yaml")
