"""Explaining a whole message in the background, cancelling, and where a waiting row stands.

A run holds the message's word tokens and feeds them to `request_explanations` in requests of at
most 16, only as many as the person's cap on rows in flight leaves room for; whatever finishes a
job feeds the runs of the people whose rows it finished (the worker, through its store), and the
sweeper feeds any run left waiting. Cancelling marks the rows that have not started `cancelled`
(the worker only takes queued rows); a running row's batch finishes, and its result is discarded
(the store only finishes rows still running).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings as site_settings
from django.db import transaction
from django.utils import timezone

from nlaweb.chat.models import Message, Snapshot, prefix_hashes
from nlaweb.chat.tokens import message_tokens
from nlaweb.explanations.models import ExplainRun, Explanation
from nlaweb.explanations.request import (
    ExplainRejected,
    ExplainSettings,
    request_explanations,
    rows_in_flight,
)
from workers.nla.types import MAX_POSITIONS_PER_REQUEST

IN_FLIGHT = (Explanation.Status.QUEUED, Explanation.Status.RUNNING)
FINISHED = (Explanation.Status.DONE, Explanation.Status.FAILED, Explanation.Status.CANCELLED)


def message_positions(snapshot: Snapshot, message: Message) -> list[int]:
    """The positions of the message's own tokens (not its template header and footer)."""
    span = snapshot.spans_by_message().get(str(message.id))
    if span is None:
        raise ExplainRejected("This message has no tokens yet; wait until it is written.")
    tokens = message_tokens(
        snapshot.token_ids, snapshot.token_texts, span["start"], span["end"], message.content
    )
    return [t.position for t in tokens if not t.template]


def start_run(snapshot: Snapshot, message: Message) -> ExplainRun:
    """Queue every word token of `message` (in the snapshot on screen) and start feeding them."""
    positions = message_positions(snapshot, message)
    if not positions:
        raise ExplainRejected("This message has no words to explain.")
    run = ExplainRun.objects.create(snapshot=snapshot, message=message, positions=positions)
    return feed(run)


def feed(run: ExplainRun) -> ExplainRun:
    """Request the run's next positions, as many as the owner's cap leaves room for."""
    with transaction.atomic():
        run = (
            ExplainRun.objects.select_for_update()
            .select_related("snapshot__conversation")
            .get(pk=run.pk)
        )
        owner_id = run.snapshot.conversation.owner_id
        room = site_settings.MAX_ROWS_IN_FLIGHT_PER_USER - rows_in_flight(owner_id)
        while run.feeding and room > 0:
            chunk = run.positions[run.fed : run.fed + min(MAX_POSITIONS_PER_REQUEST, room)]
            rows = request_explanations(run.snapshot, chunk)
            run.fed += len(chunk)
            room -= sum(1 for row in rows if row.status in IN_FLIGHT)
        run.save(update_fields=["fed"])
    return run


def feed_waiting_runs(owner_ids: Iterable[int] | None = None) -> int:
    """Feed the runs that still wait (of these people, or everyone's); returns how many were fed."""
    runs = ExplainRun.objects.filter(cancelled=False)
    if owner_ids is not None:
        runs = runs.filter(snapshot__conversation__owner_id__in=list(owner_ids))
    waiting = [run for run in runs.order_by("created_at") if run.feeding]
    for run in waiting:
        feed(run)
    return len(waiting)


@dataclass(frozen=True)
class RunProgress:
    done: int
    total: int
    cancelled: bool

    @property
    def finished(self) -> bool:
        return self.cancelled or self.done >= self.total


def progress(run: ExplainRun) -> RunProgress:
    """How many of the run's tokens have an explanation (or a failure to read); cancelled ones do
    not count."""
    snapshot = run.snapshot
    hashes = prefix_hashes(snapshot.token_ids)
    wanted = {hashes[p] for p in run.positions}
    done = (
        Explanation.objects.filter(
            snapshot__conversation_id=snapshot.conversation_id,
            source_id=snapshot.source_id,
            settings_key=ExplainSettings().key(),
            prefix_hash__in=wanted,
            status__in=(Explanation.Status.DONE, Explanation.Status.FAILED),
        )
        .values("prefix_hash")
        .distinct()
        .count()
    )
    return RunProgress(done, len(run.positions), run.cancelled)


def cancel(explanation: Explanation) -> Explanation:
    """Stop a row that waits or runs: a queued one never starts, a running one's result is dropped."""
    with transaction.atomic():
        changed = (
            Explanation.objects.filter(pk=explanation.pk)
            .in_flight()
            .cancel(
                "Cancelled before it finished; click the token to explain it again.",
                timezone.now(),
            )
        )
    explanation.refresh_from_db()
    if not changed and explanation.status not in FINISHED:
        raise ExplainRejected("This explanation could not be cancelled.")
    return explanation


def cancel_run(run: ExplainRun) -> ExplainRun:
    """Feed nothing more and cancel the run's rows that have not started."""
    with transaction.atomic():
        run = ExplainRun.objects.select_for_update().get(pk=run.pk)
        run.cancelled = True
        run.save(update_fields=["cancelled"])
        hashes = prefix_hashes(run.snapshot.token_ids)
        Explanation.objects.filter(
            snapshot__conversation_id=run.snapshot.conversation_id,
            prefix_hash__in=[hashes[p] for p in run.positions],
            status=Explanation.Status.QUEUED,
        ).cancel("Cancelled before it started.", timezone.now())
    return run
