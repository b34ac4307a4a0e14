"""A row read as queued that a worker takes before the panel counts the queue is shown as it is
now (running), never as "queued" without a place: found by benchmarks/load.py (6 of 200 clicks)."""

from __future__ import annotations

import pytest

from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import request_explanations
from nlaweb.thread.panel import sections
from tests.factories import snapshot_of

pytestmark = pytest.mark.django_db


def test_a_row_taken_between_its_read_and_the_queue_count_shows_its_stage_not_an_empty_place(
    owner, django_capture_on_commit_callbacks
):
    snapshot = snapshot_of(start_conversation(owner.user), [("user", "My cat", 20)])
    with django_capture_on_commit_callbacks():
        first, second = request_explanations(snapshot, [3, 4])
    assert first.status == second.status == Explanation.Status.QUEUED  # as the view read them
    Explanation.objects.filter(pk=first.pk).update(
        status=Explanation.Status.RUNNING, stage="capturing"
    )
    taken, waiting = sections([first, second])
    assert (taken.e.status, taken.e.stage, taken.place) == ("running", "capturing", "")
    assert (waiting.e.status, waiting.place) == ("queued", "1st in line")
