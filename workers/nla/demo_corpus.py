"""The demo NLA's fitting corpus: first paragraphs of Python standard-library docstrings, stored in
`demo_corpus.json` so that every build reads the same texts in the same order (collected live, they
depend on which modules happen to be imported)."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).with_name("demo_corpus.json")


def docstrings(count: int) -> list[str]:
    """The first `count` texts of the corpus (160 in all, 80–400 characters each)."""
    texts: list[str] = json.loads(CORPUS.read_text(encoding="utf-8"))["texts"]
    if count > len(texts):
        raise ValueError(f"The demo corpus has {len(texts)} texts; {count} were asked for.")
    return texts[:count]
