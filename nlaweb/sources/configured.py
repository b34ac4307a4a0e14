"""The web side's view of the configured NLA sources (plain config; no torch)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from workers.nla.calibration import calibration_from
from workers.source_config import SourceConfig, load_sources


@cache
def configured_sources() -> tuple[SourceConfig, ...]:
    return tuple(load_sources(settings.NLA_SOURCES_FILE, settings.DATA_DIR))


def get_source(source_id: str) -> SourceConfig | None:
    return next((s for s in configured_sources() if s.id == source_id), None)


def default_source() -> SourceConfig:
    sources = configured_sources()
    wanted = settings.NLA_DEFAULT_SOURCE
    return next((s for s in sources if s.id == wanted), sources[0])


@cache
def build_figures(source_id: str) -> dict[str, Any]:
    """Held-out fidelity figures a demo build recorded in its AR sidecar, and the source's
    calibration (`calibration`: workers.nla.calibration.Calibration or None); empty if neither."""
    source = get_source(source_id)
    meta_path = Path(source.ar) / "nla_meta.yaml" if source else None
    configured = source.calibration if source else None
    if meta_path is None or not meta_path.is_file():
        return {"calibration": configured} if configured else {}
    meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
    block = meta.get("nlaweb") or {}
    heldout = block.get("heldout") or {}
    calibration = configured or calibration_from(block.get("calibration"))
    return {"var_baseline": block.get("var_baseline"), **heldout, "calibration": calibration}
