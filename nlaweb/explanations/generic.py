"""Generic explanations (docs/confidence.md): one text the verbalizer gives to many tokens of one
message says little about any of them (the demo gave "Samsung is a Chinese company." to 6 of 24)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

#: A text is generic when at least this many explained tokens of one message carry it …
GENERIC_MIN_TOKENS = 3
#: … and they are at least this share of the message's explained tokens.
GENERIC_MIN_SHARE = 0.2


def normalised(text: str) -> str:
    """Case, spacing and the closing punctuation do not make two explanations different."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".!?;:,").strip().lower()


def repeats(texts: Iterable[str]) -> tuple[Counter[str], int]:
    """How many of `texts` (a message's explained tokens) carry each normalised text, and how many
    non-empty texts there are."""
    counts = Counter(n for n in (normalised(t) for t in texts) if n)
    return counts, sum(counts.values())


def generic_count(text: str, counts: Counter[str], explained: int) -> int:
    """How many tokens of the message share `text` when that makes it generic, else 0."""
    shared = counts.get(normalised(text), 0)
    if shared >= GENERIC_MIN_TOKENS and shared >= GENERIC_MIN_SHARE * explained:
        return shared
    return 0
