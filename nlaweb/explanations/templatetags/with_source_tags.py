"""Template helpers of "explain with…": whether a source has others of its target, and the
side-by-side view a link (`open=`) restores under one explanation's section."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django import template

from nlaweb.explanations import with_source
from nlaweb.explanations.models import Explanation

register = template.Library()


@register.filter
def has_other_sources(source_id: str) -> bool:
    return bool(with_source.other_sources(source_id))


@register.filter
def side_by_side_of(
    beside: Mapping[Any, Sequence[Explanation]] | None, explanation: Explanation
) -> with_source.SideBySide | None:
    """The side-by-side view of `explanation` with the rows the link opened beside it, if any."""
    columns = (beside or {}).get(explanation.pk)
    return with_source.side_by_side(explanation, columns) if columns else None
