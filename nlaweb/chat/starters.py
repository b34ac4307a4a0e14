"""Starter prompts offered on an empty conversation. The demo model (SmolLM2-135M-Instruct, greedy
with a repetition penalty) answers these with concrete nouns worth clicking; each was checked on it
(tests/unit/test_demo_nla.py replays them)."""

from __future__ import annotations

from workers.source_config import SourceConfig

#: prompt → a word its demo reply contains (what the test checks).
DEMO_STARTERS_CHECK: dict[str, str] = {
    "What is the capital of France?": "Paris",
    "Name three animals that live on a farm.": "Sheep",
    "Write a haiku about the ocean.": "ocean",
    "What is photosynthesis?": "plants",
}
DEMO_STARTERS: tuple[str, ...] = tuple(DEMO_STARTERS_CHECK)

GENERAL_STARTERS: tuple[str, ...] = (
    "Describe a rainy afternoon in Paris.",
    "Explain how a bicycle works.",
    "Write a haiku about a cat on a windowsill.",
)


def starters_for(source: SourceConfig | None) -> tuple[str, ...]:
    return DEMO_STARTERS if source is not None and source.demo else GENERAL_STARTERS
