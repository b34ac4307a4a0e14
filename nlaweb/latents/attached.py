"""Which SAE a source has, read from files only (no torch): its config, figures and contexts, and the
norm at which a latent's unit decoder row is sent to the verbalizer.

Why that norm: the verbalizer reads vectors at the scale of its training activations. A source whose
AV rescales (`extraction.injection_scale` a number) normalises any vector to that norm, so the row
goes at that norm and nothing depends on the choice. A source that injects raw vectors (the demo,
which patches block 8's output) would read a unit row as a near-zero activation, far out of
distribution: the row goes at the median activation norm measured at the SAE's layer when it was
trained (`activation_norm_median` in `training_figures.json`), else at √d_model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from nlaweb.api.catalog import SourceInfo, source_info
from nlaweb.sources.configured import get_source
from workers.nla.errors import NlaError
from workers.nla.sae import Sae, SaeRefused, load_sae
from workers.nla.sidecar import SIDECAR, Overrides, parse_av


@dataclass(frozen=True)
class SourceSae:
    """A source and its SAE, or the sentence that says why it has none."""

    source: SourceInfo
    sae: Sae | None
    refusal: str = ""
    scale: float = 1.0
    scale_reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def d_sae(self) -> int:
        return self.sae.config.d_sae if self.sae else 0


@lru_cache(maxsize=8)
def _load(ref: str, source_id: str, d_model: int, layer: int) -> Sae:
    return load_sae(ref, source_id, d_model, layer)


def forget() -> None:
    """Drop loaded SAEs (tests that rewrite the sources file)."""
    _load.cache_clear()


def source_sae(source_id: str) -> SourceSae | None:
    """None for an unknown source; otherwise the SAE, or why there is none."""
    config, info = get_source(source_id), source_info(source_id)
    if config is None or info is None:
        return None
    if not config.sae:
        return SourceSae(
            info, None, "No SAE is attached to this source (the sources file's 'sae')."
        )
    if info.d_model is None or info.layer is None:
        return SourceSae(
            info, None, "This source's width or layer cannot be read from its files yet."
        )
    try:
        sae = _load(config.sae, info.id, info.d_model, info.layer)
    except (SaeRefused, OSError) as exc:
        if config.demo and not Path(config.sae).exists():
            return SourceSae(info, None, "The demo SAE is not built yet: run scripts/run once.")
        return SourceSae(info, None, str(exc))
    figures = sae.figures()
    scale, reason = direction_scale(config.av, config.injection_scale, info, figures)
    return SourceSae(info, sae, scale=scale, scale_reason=reason, figures=figures)


def _av_injection_scale(av: str, override: float | str | None) -> tuple[bool, float | None]:
    """(known, scale) of the AV's injection: known False when its sidecar cannot be read here."""
    path = Path(av).expanduser() / SIDECAR
    if not path.is_file():
        return (override is not None, float(override) if isinstance(override, float) else None)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        meta = parse_av(doc, str(path), Overrides(injection_scale=override))
    except (NlaError, OSError, ValueError, yaml.YAMLError):
        return (False, None)
    return (True, meta.injection_scale)


def direction_scale(
    av: str, override: float | str | None, info: SourceInfo, figures: dict[str, Any]
) -> tuple[float, str]:
    """The L2 norm to send a unit decoder row at, and the sentence that says why (module doc)."""
    known, injection = _av_injection_scale(av, override)
    if known and injection is not None:
        return injection, (
            f"sent at the AV's injection scale {injection:g}, the norm its injection normalises "
            "every vector to"
        )
    median = figures.get("activation_norm_median")
    if isinstance(median, (int, float)) and median > 0:
        return float(median), (
            f"this source injects raw vectors, so the unit decoder row is sent at {median:g}, the "
            f"median norm of block-{info.layer} activations measured when the SAE was trained"
        )
    root = math.sqrt(info.d_model or 1)
    return root, (
        f"no typical activation norm is stored beside this SAE, so the unit decoder row is sent at "
        f"√d_model = {root:.1f}"
    )
