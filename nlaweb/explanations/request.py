"""Ask for the explanations of one or more tokens of a snapshot: stored ones are returned at once,
the others are saved as queued rows and explained by one job (one engine batch) enqueued after
commit. A failed one, or one whose worker went silent, is queued again on the next ask. One person
may have at most MAX_ROWS_IN_FLIGHT_PER_USER rows queued or running at once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings as site_settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from nlaweb.chat.models import Snapshot, prefix_hashes
from nlaweb.explanations.models import Explanation
from nlaweb.jobs.broker import enqueue
from workers.contracts import TASK_EXPLAIN
from workers.nla.types import MAX_POSITIONS_PER_REQUEST, settings_key

DEFAULT_TEMPERATURE = 0.0
#: A row in these states is explained again when it is asked for again.
RETRIED = (Explanation.Status.FAILED, Explanation.Status.CANCELLED)


class ExplainRejected(Exception):
    """The request cannot be served; the message is for the user."""


@dataclass(frozen=True)
class ExplainSettings:
    temperature: float = DEFAULT_TEMPERATURE
    max_new_tokens: int | None = None
    seed: int = 0

    def key(self) -> str:
        return settings_key(self.temperature, self.max_new_tokens, self.seed)

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


def _listed(positions: list[int]) -> str:
    """`position 5`, `positions 3 and 5`, `positions 1, 3 and 5`."""
    words = [str(p) for p in positions]
    joined = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
    return f"position{'s' if len(words) > 1 else ''} {joined}"


def check_positions(positions: Sequence[int]) -> None:
    """Raise ExplainRejected (one sentence) unless there are 1 to 16 positions, all distinct."""
    if not positions:
        raise ExplainRejected("Pick a token to explain.")
    if len(positions) > MAX_POSITIONS_PER_REQUEST:
        raise ExplainRejected(
            f"Pick at most {MAX_POSITIONS_PER_REQUEST} tokens at a time; "
            f"{len(positions)} were selected."
        )
    repeated = sorted(p for p, n in Counter(positions).items() if n > 1)
    if repeated:
        verb = "was" if len(repeated) == 1 else "were"
        raise ExplainRejected(
            f"Pick each token once: token {_listed(repeated)} {verb} selected more than once."
        )


def _check_inside(positions: Sequence[int], length: int) -> None:
    outside = sorted(p for p in positions if not 0 <= p < length)
    if outside:
        verb = "is" if len(outside) == 1 else "are"
        raise ExplainRejected(
            f"Token {_listed(outside)} {verb} outside this conversation, which has {length} "
            f"tokens (positions 0 to {length - 1})."
        )


def request_explanations(
    snapshot: Snapshot, positions: Sequence[int], settings: ExplainSettings | None = None
) -> list[Explanation]:
    """The rows of `positions` in position order; those that need work go into one enqueued job.
    A token whose prefix was explained in another snapshot of the conversation (before a later
    turn was added, or on another branch) gets that row: same tokens, same activation.
    If the broker is down, nlaweb.jobs.broker.QueueUnavailable is raised after the rows are committed
    (queued, unsent: the sweeper sends them later)."""
    settings = settings or ExplainSettings()
    check_positions(positions)
    _check_inside(positions, len(snapshot.token_ids))
    hashes = prefix_hashes(snapshot.token_ids)
    key = dict(source_id=snapshot.source_id, settings_key=settings.key())
    with transaction.atomic():
        # One person's requests take turns here, so two of them cannot both slip under the cap.
        owner_id = snapshot.conversation.owner_id
        get_user_model().objects.select_for_update().filter(pk=owner_id).first()
        # Rows are locked and created in position order, so two overlapping requests cannot deadlock.
        stored = _stored(snapshot, [hashes[p] for p in positions], key)
        asked = [p for p in positions if hashes[p] not in stored or _needs_work(stored[hashes[p]])]
        _check_capacity(owner_id, len(asked))
        rows, pending = [], []
        for position in sorted(positions):
            row = stored.get(hashes[position])
            if row is None:
                fields = {**key, "snapshot": snapshot, "position": position}
                row, created = _create(fields, settings)
                if created:
                    pending.append(row)
            elif _needs_work(row):
                row.reset()
                pending.append(row)
            rows.append(row)
        if pending:
            enqueue(TASK_EXPLAIN, [str(row.id) for row in pending])
    return rows


def _stored(snapshot: Snapshot, hashes: list[str], key: dict[str, Any]) -> dict[str, Explanation]:
    """Existing rows of these token prefixes in the snapshot's conversation, locked, by prefix
    hash; where several snapshots hold one, this snapshot's own row, else a finished one, wins."""
    found = (
        Explanation.objects.select_for_update()
        .filter(**key, snapshot__conversation_id=snapshot.conversation_id, prefix_hash__in=hashes)
        .order_by("position", "created_at")
    )
    return _best_by_prefix(found, snapshot)


def _best_by_prefix(rows: Iterable[Explanation], snapshot: Snapshot) -> dict[str, Explanation]:
    """One row per prefix hash: the snapshot's own row, else a finished one, else the first seen."""
    best: dict[str, Explanation] = {}
    for row in rows:
        held = best.get(row.prefix_hash)
        if held is None or _preference(row, snapshot) > _preference(held, snapshot):
            best[row.prefix_hash] = row
    return best


def _preference(row: Explanation, snapshot: Snapshot) -> tuple[bool, bool]:
    return row.snapshot_id == snapshot.pk, row.status == Explanation.Status.DONE


def explained_rows(
    snapshot: Snapshot, settings: ExplainSettings | None = None
) -> dict[int, Explanation]:
    """Position → the stored explanation of that token prefix in the snapshot's conversation (done
    or in progress; failed ones are left out), for tinting the chips the reader already explained."""
    settings = settings or ExplainSettings()
    hashes = prefix_hashes(snapshot.token_ids)
    position_of = {h: p for p, h in enumerate(hashes)}
    rows = Explanation.objects.filter(
        snapshot__conversation_id=snapshot.conversation_id,
        source_id=snapshot.source_id,
        settings_key=settings.key(),
        prefix_hash__in=hashes,
    ).exclude(status__in=RETRIED)
    best = _best_by_prefix(rows.order_by("created_at"), snapshot)
    return {position_of[prefix]: row for prefix, row in best.items()}


def rows_in_flight(owner_id: int) -> int:
    """Explanations of this person's conversations that are queued or running."""
    return Explanation.objects.filter(
        snapshot__conversation__owner_id=owner_id,
        status__in=[Explanation.Status.QUEUED, Explanation.Status.RUNNING],
    ).count()


def _check_capacity(owner_id: int, asked: int) -> None:
    limit = site_settings.MAX_ROWS_IN_FLIGHT_PER_USER
    waiting = rows_in_flight(owner_id) if asked else 0
    if waiting + asked > limit:
        raise ExplainRejected(
            f"You already have {waiting} explanations waiting or running, and at most {limit} "
            f"may wait at a time, so these {asked} cannot be queued yet; ask again when some "
            "have finished."
        )


def _needs_work(row: Explanation) -> bool:
    return row.status in RETRIED or row.is_abandoned


def request_explanation(
    snapshot: Snapshot, position: int, settings: ExplainSettings | None = None
) -> Explanation:
    """One token's explanation: `request_explanations` of one position."""
    return request_explanations(snapshot, [position], settings)[0]


def _create(key: dict[str, Any], settings: ExplainSettings) -> tuple[Explanation, bool]:
    """The new row and True, or the row a concurrent request created first and False (that request
    enqueues it)."""
    try:
        with transaction.atomic():
            return Explanation.objects.create(**key, settings=settings.as_dict()), True
    except IntegrityError:
        return Explanation.objects.get(**key), False
