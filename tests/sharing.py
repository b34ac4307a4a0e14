"""Rows and a source for the sharing tests: a conversation whose snapshot has finished explanations,
and a local NLA source whose checkpoint directories have real fingerprints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from nlaweb.share import revisions
from nlaweb.sources import configured as web_sources
from tests.factories import snapshot_of

SOURCE_ID = "tiny-local-l1"
ID_KEYS = {"id", "parent", "head", "leaf", "snapshot", "message_id"}
TWO_PARAGRAPHS = "A cat, the pet.\n\nSleep and warmth nearby."


def write_local_source(root: Path) -> Path:
    """A sources.toml naming three local checkpoint directories (a config file each)."""
    lines = ["[[source]]", f'id = "{SOURCE_ID}"', 'label = "Tiny local · layer 1"']
    for role in ("target", "av", "ar"):
        directory = root / role
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps({"role": role}))
        lines.append(f'{role} = "{directory}"')
    path = root / "sources.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def local_source(settings, tmp_path) -> Iterator[str]:
    settings.NLA_SOURCES_FILE = write_local_source(tmp_path / "source")
    settings.NLA_DEFAULT_SOURCE = SOURCE_ID
    web_sources.configured_sources.cache_clear()
    web_sources.build_figures.cache_clear()
    revisions._fingerprint.cache_clear()
    yield SOURCE_ID
    web_sources.configured_sources.cache_clear()
    web_sources.build_figures.cache_clear()
    revisions._fingerprint.cache_clear()


def finished(
    snapshot: Snapshot,
    position: int,
    text: str = TWO_PARAGRAPHS,
    confidence: str = "high",
    status: str = Explanation.Status.DONE,
) -> Explanation:
    """A stored explanation of `position` as a worker leaves it."""
    settings = ExplainSettings()
    return Explanation.objects.create(
        snapshot=snapshot,
        position=position,
        source_id=snapshot.source_id,
        settings_key=settings.key(),
        settings=settings.as_dict(),
        status=status,
        stage=status,
        token_id=snapshot.token_ids[position],
        token_text=snapshot.token_texts[position],
        text=text if status == Explanation.Status.DONE else "",
        raw_text=text,
        mse=0.41,
        cosine=0.93,
        fve=0.78,
        relative_mse=0.22,
        confidence=confidence if status == Explanation.Status.DONE else "",
        l2_norm=12.5,
        specificity=0.91 if status == Explanation.Status.DONE else None,
        error="" if status == Explanation.Status.DONE else "The worker ran out of memory.",
    )


@dataclass
class Explained:
    conversation: Conversation
    snapshot: Snapshot
    explanations: dict[int, Explanation]


def explained_conversation(owner, positions: tuple[int, ...] = (2, 8)) -> Explained:
    """A conversation of `owner` with one exchange and finished explanations at `positions`."""
    conversation = start_conversation(owner)
    snapshot = snapshot_of(conversation)
    return Explained(conversation, snapshot, {p: finished(snapshot, p) for p in positions})


def normalized(document: dict[str, Any]) -> dict[str, Any]:
    """The document with ids numbered by first appearance and every time left out."""
    numbers: dict[str, int] = {}

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items() if not k.endswith("_at")}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if key in ID_KEYS and isinstance(value, str):
            return numbers.setdefault(value, len(numbers))
        return value

    return walk(document)
