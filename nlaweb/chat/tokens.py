"""How a snapshot's tokens read on the page: which tokens of a message's span are its words and which
are chat-template text (`<|im_start|>`, the role name, the closing newline), and a token in the
middle of its neighbours for the explanation panel. Pure functions over stored token texts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Neighbours shown on each side of an explained token ("… says me**ow** …").
CONTEXT_TOKENS = 6


@dataclass(frozen=True)
class Token:
    position: int
    text: str
    token_id: int
    template: bool  # chat-template text, folded unless the reader asks for template tokens


def content_range(texts: Sequence[str], content: str) -> tuple[int, int]:
    """`[start, end)` indices into `texts` (a message's templated span) of the tokens that spell
    `content`. The template's header and footer tokens fall outside. When the content cannot be
    found in the joined texts (a template that rewrites it), every token counts as content."""
    joined = "".join(texts)
    found = _spelled(content.strip()).search(joined) if content.strip() else None
    if found is None:
        return 0, len(texts)
    first_char, last_char = found.span()
    start = end = None
    offset = 0
    for index, text in enumerate(texts):
        following = offset + len(text)
        if start is None and following > first_char:
            start = index
        if following >= last_char:
            end = index + 1
            break
        offset = following
    return (start or 0), (end if end is not None else len(texts))


def _spelled(content: str) -> re.Pattern[str]:
    """`content` as the token texts spell it: a character of several UTF-8 bytes split over tokens
    decodes, token by token, to replacement characters (U+FFFD) instead of itself."""
    return re.compile(
        "".join(
            re.escape(ch) if ch.isascii() else f"(?:{re.escape(ch)}|\ufffd{{1,4}})"
            for ch in content
        )
    )


def message_tokens(
    token_ids: Sequence[int], token_texts: Sequence[str], start: int, end: int, content: str
) -> list[Token]:
    """The tokens of one message's span `[start, end)`, each marked template or content."""
    first, last = content_range(token_texts[start:end], content)
    return [
        Token(p, token_texts[p], token_ids[p], not start + first <= p < start + last)
        for p in range(start, end)
    ]


def template_tokens(
    token_ids: Sequence[int], token_texts: Sequence[str], start: int, end: int
) -> list[Token]:
    """Tokens `[start, end)` that belong to no message (BOS, a default system prompt, a generation
    prompt): all template."""
    return [Token(p, token_texts[p], token_ids[p], True) for p in range(start, end)]


@dataclass(frozen=True)
class InContext:
    """A token between its neighbours, as the panel quotes it."""

    before: str
    token: str
    after: str
    cut_before: bool  # more text precedes `before`
    cut_after: bool


def in_context(
    texts: Sequence[str], position: int, lo: int, hi: int, width: int = CONTEXT_TOKENS
) -> InContext:
    """Token `position` with up to `width` neighbours on each side, kept inside `[lo, hi)` (its
    message), so the quote never runs into another turn's template tokens."""
    first = max(lo, position - width)
    last = min(hi, position + width + 1)
    return InContext(
        before="".join(texts[first:position]),
        token=texts[position],
        after="".join(texts[position + 1 : last]),
        cut_before=first > lo,
        cut_after=last < hi,
    )
