"""NLA sources: which target model and which AV/AR checkpoints a source id means.

Plain configuration, importable by the web process (no torch). Sources come from a TOML file
(`NLA_SOURCES_FILE`) or, by default, the embedded demo source built by `manage.py prepare_demo`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.nla.calibration import Calibration, calibration_from
from workers.nla.errors import CheckpointIncompatible

DEMO_SOURCE_ID = "smollm2-demo-l8"


@dataclass(frozen=True)
class SourceConfig:
    """One NLA source. `target`, `av` and `ar` are a hub id (optionally `@revision`) or a local dir."""

    id: str
    label: str
    target: str
    av: str
    ar: str
    layer: int | None = None
    injection_scale: float | str | None = None
    mse_scale: float | None = None
    var_baseline: float | None = None
    demo: bool = False
    notes: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    #: The checkpoint's published median relative MSE of matched and shuffled explanations
    #: (docs/confidence.md); absent: the AR sidecar's `nlaweb.calibration`, else the fixed scale.
    calibration_matched: float | None = None
    calibration_shuffled: float | None = None
    calibration_basis: str = ""

    @property
    def calibration(self) -> Calibration | None:
        """The figures this source's configuration gives, if both are there."""
        return calibration_from(
            {
                "matched_median": self.calibration_matched,
                "shuffled_median": self.calibration_shuffled,
                "basis": self.calibration_basis or "the source's published figures",
            }
        )


def demo_paths(data_dir: Path) -> tuple[Path, Path, Path]:
    """Where `prepare_demo` writes the demo target, AV and AR."""
    root = data_dir / "demo"
    return root / "smollm2-135m-instruct", root / "nla-smollm2-l8-av", root / "nla-smollm2-l8-ar"


def demo_source(data_dir: Path) -> SourceConfig:
    """The embedded demo NLA for SmolLM2-135M-Instruct, as written by `prepare_demo`."""
    target, av, ar = demo_paths(data_dir)
    return SourceConfig(
        id=DEMO_SOURCE_ID,
        label="SmolLM2-135M-Instruct · layer 8 · demo NLA, uncalibrated",
        target=str(target),
        av=str(av),
        ar=str(ar),
        demo=True,
        notes="Training-free Patchscopes verbalizer and a ridge-fitted reconstructor head.",
    )


_KNOWN_KEYS = {
    "id",
    "label",
    "target",
    "av",
    "ar",
    "layer",
    "injection_scale",
    "mse_scale",
    "var_baseline",
    "demo",
    "notes",
    "calibration_matched",
    "calibration_shuffled",
    "calibration_basis",
}


def parse_sources(text: str, origin: str = "NLA_SOURCES_FILE") -> list[SourceConfig]:
    """Parse `[[source]]` tables of a TOML document; every mistake names the source and the key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CheckpointIncompatible(f"{origin} is not valid TOML: {exc}.") from exc
    tables = doc.get("source", [])
    if not isinstance(tables, list) or not tables:
        raise CheckpointIncompatible(f"{origin} declares no [[source]] table.")
    sources = [_parse_one(t, origin) for t in tables]
    ids = [s.id for s in sources]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise CheckpointIncompatible(f"{origin} declares source '{duplicate}' twice.")
    return sources


def _parse_one(table: dict[str, Any], origin: str) -> SourceConfig:
    name = table.get("id", "?")
    for key in ("id", "target", "av", "ar"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise CheckpointIncompatible(f"{origin}: source '{name}' needs a string '{key}'.")
    unknown = set(table) - _KNOWN_KEYS
    if unknown:
        raise CheckpointIncompatible(
            f"{origin}: source '{name}' has unknown key(s) {', '.join(sorted(unknown))}."
        )
    return SourceConfig(
        id=table["id"],
        label=str(table.get("label", table["id"])),
        target=table["target"],
        av=table["av"],
        ar=table["ar"],
        layer=_opt(table, "layer", int, name, origin),
        injection_scale=table.get("injection_scale"),
        mse_scale=_opt(table, "mse_scale", float, name, origin),
        var_baseline=_opt(table, "var_baseline", float, name, origin),
        demo=bool(table.get("demo", False)),
        notes=str(table.get("notes", "")),
        calibration_matched=_opt(table, "calibration_matched", float, name, origin),
        calibration_shuffled=_opt(table, "calibration_shuffled", float, name, origin),
        calibration_basis=str(table.get("calibration_basis", "")),
    )


def _opt(table: dict[str, Any], key: str, kind: type, name: str, origin: str) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CheckpointIncompatible(
            f"{origin}: source '{name}' key '{key}' must be {kind.__name__}, found {value!r}."
        )
    return value


def load_sources(path: Path | None, data_dir: Path) -> list[SourceConfig]:
    """Sources from `path` if given, else the embedded demo source."""
    if path is None:
        return [demo_source(data_dir)]
    return parse_sources(path.read_text(encoding="utf-8"), origin=str(path))


def served_sources(sources: Sequence[SourceConfig], wanted: Sequence[str]) -> list[SourceConfig]:
    """The sources a worker serves: those named in `wanted` (NLA_WORKER_SOURCES), or all when empty.
    A name that matches no configured source is an error, not a silently idle worker."""
    if not wanted:
        return list(sources)
    known = {s.id for s in sources}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise CheckpointIncompatible(
            f"NLA_WORKER_SOURCES names {', '.join(unknown)}, which no configured source has; "
            f"the configured ones are {', '.join(sorted(known))}."
        )
    return [s for s in sources if s.id in wanted]
