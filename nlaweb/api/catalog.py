"""What the API says about each configured source, read from files only (the web never imports
torch): layer, d_model and Var baseline from the AR's `nla_meta.yaml` (through the engine's own,
torch-free sidecar parser, so aliases and source overrides read the same as in the worker), the
target's width from its `config.json`. A hub checkpoint is read from the local Hugging Face cache."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlaweb.share.revisions import checkpoint_revision
from nlaweb.sources.configured import configured_sources, get_source
from workers.nla.errors import NlaError
from workers.nla.sidecar import SIDECAR, Overrides, parse_ar
from workers.source_config import SourceConfig


@dataclass(frozen=True)
class Checkpoint:
    ref: str  # local directory or hub id as configured
    revision: str | None  # the `@revision` of a hub id; None for a local directory or no pin


@dataclass(frozen=True)
class SourceInfo:
    id: str
    label: str
    model_id: str  # the target's name: a hub id without revision, or a local directory's name
    layer: int | None
    d_model: int | None
    var_baseline: float | None
    target: Checkpoint
    av: Checkpoint
    ar: Checkpoint
    demo: bool
    uncalibrated: bool
    notes: str


def checkpoint(ref: str) -> Checkpoint:
    if Path(ref).expanduser().is_absolute() or Path(ref).expanduser().is_dir():
        return Checkpoint(ref, None)
    revision = ref.partition("@")[2]
    return Checkpoint(ref, revision or None)


def public_checkpoint(ref: str) -> dict[str, str]:
    """What an API caller may read of a checkpoint: a hub id with its revision (`main` unpinned),
    or a local directory's name with its `sha256:` fingerprint; never a server path."""
    local = Path(ref).expanduser()
    name = local.name if local.is_absolute() or local.is_dir() else ref.partition("@")[0]
    return {"ref": name, "revision": checkpoint_revision(ref)}


def model_id(ref: str) -> str:
    """`org/name` of a hub id (revision dropped), or the directory name of a local path."""
    local = Path(ref).expanduser()
    if local.is_absolute() or local.is_dir():
        return local.name
    return ref.partition("@")[0]


def _file(ref: str, name: str) -> Path | None:
    """`name` inside checkpoint `ref`: a local directory, or the local Hugging Face cache."""
    local = Path(ref).expanduser()
    if local.is_absolute() or local.is_dir():
        path = local / name
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = ref.partition("@")
    found = try_to_load_from_cache(repo, name, revision=revision or None)
    return Path(found) if isinstance(found, str) else None


def _yaml(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else None


def _width(ref: str) -> int | None:
    path = _file(ref, "config.json")
    if path is None:
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    config = config.get("text_config") or config
    width = config.get("hidden_size")
    return int(width) if isinstance(width, int) else None


def source_info(source_id: str) -> SourceInfo | None:
    """The source's figures; None for an unknown id. Unreadable files leave their fields None."""
    source = get_source(source_id)
    return _info(source) if source else None


def _info(source: SourceConfig) -> SourceInfo:
    overrides = Overrides(
        source.layer,
        source.injection_scale,
        source.mse_scale,
        source.var_baseline,
        source.calibration,
    )
    layer = d_model = var = None
    uncalibrated = False
    try:
        doc = _yaml(_file(source.ar, SIDECAR))
        if doc is not None:
            meta = parse_ar(doc, f"{source.ar}/{SIDECAR}", overrides)
            layer, d_model, var, uncalibrated = (
                meta.layer,
                meta.d_model,
                meta.var_baseline,
                meta.uncalibrated,
            )
    except (NlaError, OSError, ValueError, yaml.YAMLError):
        pass  # the worker refuses such a checkpoint with the sentence; here the fields stay empty
    return SourceInfo(
        id=source.id,
        label=source.label,
        model_id=model_id(source.target),
        layer=layer if layer is not None else source.layer,
        d_model=d_model or _width(source.target),
        var_baseline=var if var is not None else source.var_baseline,
        target=checkpoint(source.target),
        av=checkpoint(source.av),
        ar=checkpoint(source.ar),
        demo=source.demo,
        uncalibrated=uncalibrated or source.demo,
        notes=source.notes,
    )


def all_sources() -> list[SourceInfo]:
    return [info for s in configured_sources() if (info := source_info(s.id)) is not None]
