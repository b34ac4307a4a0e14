from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

if TYPE_CHECKING:
    from nlaweb.thread.view import Chip

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


@register.simple_tag(takes_context=True)
def chip_classes(context: template.Context, chip: Chip) -> str:
    """The chip's classes: `tok`, what it is and its tint (Chip.classes), and the page's state of
    it: open in the panel, read-only on a share, the share's pinned token."""
    classes = ["tok"]
    if context.get("readonly"):
        classes.append("ro")
        if chip.position == context.get("pinned_position"):
            classes.append("pinned")
    if chip.classes:
        classes.append(chip.classes)
    if chip.prefix in (context.get("open_prefixes") or ()):
        classes.append("open")
    return " ".join(classes)
