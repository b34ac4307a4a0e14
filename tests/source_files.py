"""A sources file of three configured sources for the web side (no checkpoint files): two NLAs of
one target at blocks 2 and 1 ("near", "far") and one of another target ("other-model")."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlaweb.sources import configured as web_sources
from workers.source_config import parse_sources

SOURCES = """
[[source]]
id = "near"
label = "Tiny near"
target = "{root}/target"
av = "{root}/av-2"
ar = "{root}/ar-2"
layer = 2

[[source]]
id = "other-model"
label = "Another model"
target = "{root}/another-target"
av = "{root}/av-x"
ar = "{root}/ar-x"

[[source]]
id = "far"
label = "Tiny far"
target = "{root}/target/"
av = "{root}/av-1"
ar = "{root}/ar-1"
layer = 1
"""


@pytest.fixture
def three_sources(settings, tmp_path: Path):
    """The three sources, configured; 'near' is the default."""
    path = tmp_path / "sources.toml"
    path.write_text(SOURCES.format(root=tmp_path))
    settings.NLA_SOURCES_FILE = path
    settings.NLA_DEFAULT_SOURCE = "near"
    web_sources.configured_sources.cache_clear()
    yield parse_sources(path.read_text())
    web_sources.configured_sources.cache_clear()
