"""Two tiny NLA sources of one target at different layers (issue 17 item 4): the tiny source at
block 2, and another whose AV and AR are written for block 1 and whose target is the first's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.tiny_models import LAYER, build_tiny_source
from workers.source_config import SourceConfig

SECOND_LAYER = 1


def build_two_sources(root: Path, family: str = "llama") -> tuple[SourceConfig, SourceConfig]:
    """(the tiny source at LAYER, one of the same target at SECOND_LAYER). The tiny builders are
    seeded, so the second's AR trunk holds the target's own first two blocks."""
    first = build_tiny_source(root / f"l{LAYER}", family=family)
    second = build_tiny_source(
        root / f"l{SECOND_LAYER}",
        family=family,
        av_changes={"extraction_layer_index": SECOND_LAYER},
        ar_changes={"critic__extraction_layer_index": SECOND_LAYER},
        ar_layers=SECOND_LAYER + 1,
    )
    label = f"tiny {family} · layer {SECOND_LAYER} · test NLA"
    return first, replace(
        second, id=f"{first.id}-l{SECOND_LAYER}", label=label, target=first.target
    )
