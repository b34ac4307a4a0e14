from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

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


@register.filter
def ago(when: datetime) -> str:
    """ "just now" under a minute, else "5 minutes ago" (Django's timesince)."""
    if timezone.now() - when < timedelta(minutes=1):
        return "just now"
    return f"{timesince(when)} ago"
