"""`nla_meta.yaml`: read every field of the published sidecar (../shared/NLA.md §5) into typed values.

Aliases of older releases are accepted (`actor`/`critic` for `av`/`ar`; three spellings of the AR's
layer); unknown keys are ignored. Checks that need a tokenizer or a model config live in `contract.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workers.nla.calibration import Calibration, calibration_from
from workers.nla.errors import CheckpointIncompatible, mismatch

SIDECAR = "nla_meta.yaml"
DEFAULT_STOP = "</explanation>"
DEFAULT_MAX_NEW_TOKENS = 256
_ROLES = {"av": "av", "actor": "av", "ar": "ar", "critic": "ar"}


@dataclass(frozen=True)
class Overrides:
    """Values a source may supply for a sidecar that lacks them (source configuration)."""

    layer: int | None = None
    injection_scale: float | str | None = None
    mse_scale: float | None = None
    var_baseline: float | None = None
    calibration: Calibration | None = None


@dataclass(frozen=True)
class AvMeta:
    d_model: int
    injection_scale: float | None  # None: inject the raw vector
    injection_layer: int  # 0: overwrite the embedding row; j > 0: the output of block j (prefill)
    injection_char: str
    injection_token_id: int
    left_neighbor_id: int | None
    right_neighbor_id: int | None
    template: str  # contains {injection_char}
    chat_template: bool  # the template is the user turn of the AV's chat template
    stop_strings: tuple[str, ...]
    max_new_tokens: int
    layer: int | None
    uncalibrated: bool


@dataclass(frozen=True)
class ArMeta:
    d_model: int
    mse_scale: float | None  # None: compare raw vectors
    layer: int  # K: the AR keeps blocks 0..K
    template: str  # contains {explanation}
    suffix_ids: tuple[int, ...] | None
    var_baseline: float | None
    uncalibrated: bool
    heldout: dict[str, Any] = field(default_factory=dict)
    #: Median relative MSE of matched and shuffled explanations (the sidecar's
    #: `nlaweb.calibration`, or the source's published figures); None: Neuronpedia's fixed scale.
    calibration: Calibration | None = None


def read_yaml(directory: Path) -> dict[str, Any]:
    path = directory / SIDECAR
    if not path.is_file():
        raise CheckpointIncompatible(f"{directory} has no {SIDECAR}: it is not an NLA checkpoint.")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CheckpointIncompatible(f"{path} is not valid YAML: {exc}.") from exc
    if not isinstance(doc, dict):
        raise CheckpointIncompatible(f"{path} must be a mapping of fields.")
    return doc


class _Reader:
    """Typed access to nested sidecar fields, with errors naming the dotted field."""

    def __init__(self, doc: dict[str, Any], where: str) -> None:
        self.doc, self.where = doc, where

    def get(self, *names: str) -> Any:
        """The first of the dotted `names` present (aliases), else None."""
        for name in names:
            node: Any = self.doc
            for part in name.split("."):
                if not isinstance(node, dict) or part not in node:
                    break
                node = node[part]
            else:
                return node
        return None

    def has(self, name: str) -> bool:
        parent, _, leaf = name.rpartition(".")
        node = self.get(parent) if parent else self.doc
        return isinstance(node, dict) and leaf in node

    def need(self, kind: type, *names: str) -> Any:
        value = self.get(*names)
        if value is None:
            raise CheckpointIncompatible(f"{self.where}: required field '{names[0]}' is missing.")
        return self.typed(kind, names[0], value)

    def typed(self, kind: type, name: str, value: Any) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise mismatch(self.where, name, f"a {kind.__name__}", value)
        return value

    def opt(self, kind: type, *names: str) -> Any:
        value = self.get(*names)
        return None if value is None else self.typed(kind, names[0], value)


def _common(r: _Reader, role: str) -> int:
    kind = r.get("kind")
    if kind is not None and kind != "nla_model":
        raise mismatch(r.where, "kind", "nla_model", kind)
    found = r.need(str, "role")
    if _ROLES.get(found) != role:
        raise mismatch(r.where, "role", role, found)
    d_model: int = r.need(int, "d_model")
    return d_model


def _scale(value: Any, d_model: int, r: _Reader, name: str) -> float | None:
    if value is None:
        return None
    if value == "sqrt_d_model":
        return math.sqrt(d_model)
    scale: float = r.typed(float, name, value)
    if scale <= 0:
        raise mismatch(r.where, name, "a positive number", value)
    return scale


def _layer(r: _Reader, override: int | None) -> int | None:
    found = r.opt(
        int,
        "critic.extraction_layer_index",
        "extraction_layer_index",
        "extraction.layer_index",
        "critic.num_hidden_layers",
        "ar.num_hidden_layers",
    )
    return override if override is not None else found


def parse_av(doc: dict[str, Any], where: str, overrides: Overrides | None = None) -> AvMeta:
    overrides = overrides or Overrides()
    r = _Reader(doc, where)
    d_model = _common(r, "av")
    if overrides.injection_scale is not None:
        raw_scale: Any = overrides.injection_scale
    elif r.has("extraction.injection_scale"):
        raw_scale = r.get("extraction.injection_scale")
    else:
        raise CheckpointIncompatible(
            f"{where}: required field 'extraction.injection_scale' is missing (null means raw)."
        )
    template: str = r.need(str, "prompt_templates.av", "prompt_templates.actor")
    if "{injection_char}" not in template:
        raise mismatch(
            where, "prompt_templates.av", "a template containing {injection_char}", template
        )
    block = r.get("nlaweb") or {}
    stops = block.get("stop_strings") or [DEFAULT_STOP]
    injection_layer = r.opt(int, "extraction.injection_layer") or 0
    if injection_layer < 0:
        raise mismatch(where, "extraction.injection_layer", "0 or a block index", injection_layer)
    return AvMeta(
        d_model=d_model,
        injection_scale=_scale(raw_scale, d_model, r, "extraction.injection_scale"),
        injection_layer=injection_layer,
        injection_char=r.need(str, "tokens.injection_char"),
        injection_token_id=r.need(int, "tokens.injection_token_id"),
        left_neighbor_id=r.opt(int, "tokens.injection_left_neighbor_id"),
        right_neighbor_id=r.opt(int, "tokens.injection_right_neighbor_id"),
        template=template,
        chat_template=bool(block.get("chat_template", True)),
        stop_strings=tuple(str(s) for s in stops),
        max_new_tokens=int(block.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS),
        layer=_layer(r, overrides.layer),
        uncalibrated=bool(block.get("uncalibrated", False)),
    )


def parse_ar(doc: dict[str, Any], where: str, overrides: Overrides | None = None) -> ArMeta:
    overrides = overrides or Overrides()
    r = _Reader(doc, where)
    d_model = _common(r, "ar")
    if overrides.mse_scale is not None:
        mse_scale: float | None = overrides.mse_scale
    elif r.has("extraction.mse_scale"):
        mse_scale = _scale(r.get("extraction.mse_scale"), d_model, r, "extraction.mse_scale")
    else:
        mse_scale = math.sqrt(d_model)
    layer = _layer(r, overrides.layer)
    if layer is None:
        raise CheckpointIncompatible(
            f"{where}: the AR's layer is missing ('critic.extraction_layer_index'); "
            "give it as the source's 'layer'."
        )
    template: str = r.need(str, "prompt_templates.ar", "prompt_templates.critic")
    if "{explanation}" not in template:
        raise mismatch(
            where, "prompt_templates.ar", "a template containing {explanation}", template
        )
    suffix = r.get("tokens.critic_suffix_ids")
    block = r.get("nlaweb") or {}
    var = (
        overrides.var_baseline if overrides.var_baseline is not None else block.get("var_baseline")
    )
    return ArMeta(
        d_model=d_model,
        mse_scale=mse_scale,
        layer=layer,
        template=template,
        suffix_ids=tuple(int(i) for i in suffix) if suffix else None,
        var_baseline=float(var) if var is not None else None,
        uncalibrated=bool(block.get("uncalibrated", False)),
        heldout=dict(block.get("heldout") or {}),
        calibration=overrides.calibration or calibration_from(block.get("calibration")),
    )
