"""Read one token with several NLAs: the same token explained by another source of the same target
model, side by side (issue 17 item 4).

Two sources can read one snapshot when they serve the same target checkpoint: the snapshot's token
ids are that target's, so the other source's worker captures the activation at its own layer from
the same ids. A source of another target would read other tokens (another tokenizer, another
template) and is refused with a sentence. The other source's row is an ordinary Explanation of the
same snapshot and position under its own `source_id` (rows are keyed by source), so it rides that
source's shared batches and is a lookup the second time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from nlaweb.api.catalog import source_info
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected, ExplainSettings, request_explanations
from nlaweb.sources.configured import configured_sources
from nlaweb.thread.panel import Section, sections
from workers.source_config import SourceConfig

#: Sources one token may be read by at once, its own included (a row of the page at 1400 px).
MAX_SIDE_BY_SIDE = 4


def same_target(a: SourceConfig, b: SourceConfig) -> bool:
    """Whether two sources serve the same target checkpoint (hub id with its revision, or path)."""
    return a.target.rstrip("/") == b.target.rstrip("/")


def other_sources(
    source_id: str, sources: Sequence[SourceConfig] | None = None
) -> list[SourceConfig]:
    """The configured sources, other than `source_id`, that serve its target model, in the sources
    file's order; none when `source_id` is not configured."""
    pool = list(configured_sources() if sources is None else sources)
    own = next((s for s in pool if s.id == source_id), None)
    if own is None:
        return []
    return [s for s in pool if s.id != own.id and same_target(own, s)]


def eligible_source(explanation: Explanation, source_id: str) -> SourceConfig:
    """The source `source_id` if it may read `explanation`'s token, else ExplainRejected with a
    sentence saying why (unknown, the same source, another target model)."""
    if source_id == explanation.source_id:
        raise ExplainRejected(f"This explanation is already by '{source_id}'; pick another source.")
    return check_same_target(explanation.source_id, source_id)


def check_same_target(own_id: str, source_id: str) -> SourceConfig:
    """The source `source_id` if it serves the target of the source `own_id` (which it may be),
    else ExplainRejected with a sentence (unknown source, another target model)."""
    pool = list(configured_sources())
    wanted = next((s for s in pool if s.id == source_id), None)
    own = next((s for s in pool if s.id == own_id), None)
    if wanted is None:
        known = ", ".join(s.id for s in pool) or "none"
        raise ExplainRejected(
            f"There is no NLA source '{source_id[:100]}'; the configured ones are {known}."
        )
    if own is None:
        raise ExplainRejected(
            f"The source '{own_id}' is no longer configured, so no other source can be matched "
            "to its target model."
        )
    if not same_target(own, wanted):
        raise ExplainRejected(
            f"'{wanted.id}' reads another target model ({wanted.target}) than '{own.id}' "
            f"({own.target}): its tokens and activations are not this conversation's, so it "
            "cannot explain this token."
        )
    return wanted


def explain_with(explanation: Explanation, source_id: str) -> Explanation:
    """The same token (snapshot and position) explained by `source_id`, with the same generation
    settings: the stored row, or a queued one now (one job, enqueued after commit)."""
    source = eligible_source(explanation, source_id)
    settings = ExplainSettings(**explanation.settings) if explanation.settings else None
    return request_explanations(
        explanation.snapshot, [explanation.position], settings, source_id=source.id
    )[0]


@dataclass(frozen=True)
class SourceSide:
    """One source's reading of the token, as a column of the side-by-side view shows it."""

    e: Explanation
    label: str
    layer: int | None  # from the AR's sidecar (nlaweb.api.catalog), None where it is unreadable

    @property
    def sections(self) -> list[Section]:
        """The row as the panel's section (it streams and refreshes like any other)."""
        return sections([self.e])


def side(explanation: Explanation) -> SourceSide:
    info = source_info(explanation.source_id)
    if info is None:
        return SourceSide(explanation, explanation.source_id, None)
    return SourceSide(explanation, info.label, info.layer)


def split_open(
    rows: Sequence[Explanation],
) -> tuple[list[Explanation], dict[UUID, list[Explanation]]]:
    """The rows an `open=` link names, split into the panel's sections and, per section, the rows of
    other sources for the same token (the same token prefix) that show beside it: the first
    row of a token (its token prefix) is its section, later rows of it by other sources its side-by-side
    columns (at most MAX_SIDE_BY_SIDE − 1). A link can thus restore the side-by-side view."""
    sections: list[Explanation] = []
    beside: dict[UUID, list[Explanation]] = {}
    first: dict[str, Explanation] = {}
    for row in rows:
        held = first.get(row.prefix_hash)  # the same prefix: the same token, in any snapshot
        if held is None:
            first[row.prefix_hash] = row
            sections.append(row)
            continue
        columns = beside.setdefault(held.pk, [])
        taken = {held.source_id, *(c.source_id for c in columns)}
        if row.source_id not in taken and len(columns) < MAX_SIDE_BY_SIDE - 1:
            columns.append(row)
    return sections, beside


@dataclass(frozen=True)
class SideBySide:
    """A token's explanation by its own source and, beside it, by other sources of its target."""

    mine: SourceSide
    columns: list[SourceSide]


def side_by_side(explanation: Explanation, beside: Sequence[Explanation]) -> SideBySide:
    return SideBySide(side(explanation), [side(row) for row in beside])
