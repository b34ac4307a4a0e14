from __future__ import annotations

from django import template

register = template.Library()

_VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}


@register.filter
def token_display(text: str) -> str:
    """Make whitespace-only pieces visible on a chip; the result is still auto-escaped."""
    shown = "".join(_VISIBLE.get(ch, ch) for ch in text)
    return shown if shown.strip() else shown.replace(" ", "·") or "∅"


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
