"""Whole-message runs fed under the per-person cap, cancelling, and places in the queue (issue 8
items 5 and 6), on PostgreSQL."""

from __future__ import annotations

import pytest
from django.urls import reverse

from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations import runs
from nlaweb.explanations.models import ExplainRun, Explanation
from nlaweb.explanations.request import request_explanations
from nlaweb.jobs.django_store import DjangoStore
from nlaweb.thread.view import thread_view
from tests.factories import snapshot_of
from tests.personas import make_persona
from workers.contracts import RunProgress, ordinal

pytestmark = pytest.mark.django_db

WORDS = 40  # tokens of the long reply


@pytest.fixture
def long_reply(owner):
    conversation = start_conversation(owner.user)
    snapshot = snapshot_of(conversation, [("user", "Tell me", 4), ("assistant", "Long.", WORDS)])
    return snapshot, snapshot.leaf


def _finish(rows, status: str = "done") -> None:
    Explanation.objects.filter(pk__in=[r.pk for r in rows]).update(status=status, relative_mse=0.4)


def test_a_run_feeds_only_as_many_rows_as_the_cap_leaves_room_for(long_reply, settings):
    settings.MAX_ROWS_IN_FLIGHT_PER_USER = 20
    snapshot, reply = long_reply
    run = runs.start_run(snapshot, reply)
    assert run.positions == list(range(4, 4 + WORDS))
    assert run.fed == 20  # 16 + 4: the cap, not the whole message
    assert Explanation.objects.filter(status="queued").count() == 20
    _finish(Explanation.objects.all())
    assert runs.feed_waiting_runs() == 1
    run.refresh_from_db()
    assert run.fed == 40 and not run.feeding
    assert runs.progress(run).done == 20
    _finish(Explanation.objects.filter(status="queued"))
    assert runs.progress(run) == runs.RunProgress(40, 40, False)


def test_cancelling_a_run_stops_feeding_and_cancels_what_has_not_started(long_reply, settings):
    settings.MAX_ROWS_IN_FLIGHT_PER_USER = 20
    snapshot, reply = long_reply
    run = runs.start_run(snapshot, reply)
    started = Explanation.objects.order_by("position")[:3]
    Explanation.objects.filter(pk__in=[r.pk for r in started]).update(status="running")
    runs.cancel_run(run)
    assert Explanation.objects.filter(status="cancelled").count() == 17
    assert Explanation.objects.filter(status="running").count() == 3
    assert runs.feed_waiting_runs() == 0
    assert runs.progress(ExplainRun.objects.get()).cancelled
    # A cancelled token is explained again when asked for again.
    (again,) = request_explanations(snapshot, [10])
    assert again.status == "queued"


@pytest.mark.django_db(transaction=True)  # the worker's store closes stale connections
def test_a_cancelled_running_row_keeps_cancelled_when_its_batch_finishes(long_reply):
    snapshot, _ = long_reply
    (row,) = request_explanations(snapshot, [5])
    Explanation.objects.filter(pk=row.pk).update(status="running")
    runs.cancel(row)
    DjangoStore().finish_explanation(str(row.pk), {"text": "late", "mse": 0.1})
    row.refresh_from_db()
    assert (row.status, row.text) == ("cancelled", "")  # the result was discarded
    done = request_explanations(snapshot, [6])[0]
    Explanation.objects.filter(pk=done.pk).update(status="done")
    assert runs.cancel(done).status == "done"  # nothing to cancel: it stays done


def test_waiting_rows_are_told_their_place_in_the_order_workers_take_them(long_reply):
    snapshot, _ = long_reply
    flood = request_explanations(snapshot, [5, 6, 7])
    other = make_persona("other")
    theirs = snapshot_of(start_conversation(other.user), [("user", "Hi", 3)], first_token=300)
    (single,) = request_explanations(theirs, [1])
    places = Explanation.objects.queue_places(snapshot.source_id)
    assert places[str(flood[0].pk)] == 1
    assert places[str(single.pk)] == 2  # people take turns: the flood does not push it back
    assert [places[str(r.pk)] for r in flood[1:]] == [3, 4]
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 103)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "103rd",
    ]  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_the_panel_shows_the_place_and_a_finished_job_reports_run_progress(
    long_reply, owner, monkeypatch
):
    snapshot, reply = long_reply
    run = runs.start_run(snapshot, reply)
    rows = list(Explanation.objects.order_by("position")[:16])
    panel = owner.client.get(
        reverse("conversation", args=[snapshot.conversation_id]) + f"?open={rows[1].pk}"
    ).content.decode()
    assert "2nd in line" in panel
    published: list[tuple[str, object]] = []
    store = DjangoStore()
    monkeypatch.setattr(store, "publish", lambda c, f: published.append((c, f)))
    _finish(rows)
    store.job_finished([str(r.pk) for r in rows])
    progress = [f for _, f in published if isinstance(f, RunProgress)]
    assert progress == [
        RunProgress(run_id=str(run.pk), message_id=str(reply.pk), done=16, total=WORDS)
    ]
    view = thread_view(snapshot.conversation)
    assert view.messages[1].run_progress.done == 16
    assert all(c.heat == "0.27" for c in view.messages[1].chips[:16])  # 0.4 / 1.5


def test_explain_all_and_cancel_through_the_views(long_reply, owner, stranger):
    snapshot, reply = long_reply
    url = reverse("explain_message", args=[snapshot.conversation_id, snapshot.id, reply.id])
    assert stranger.client.post(url).status_code == 404
    page = owner.client.post(url, HTTP_HX_REQUEST="true").content.decode()
    run = ExplainRun.objects.get()
    assert 'data-role="run-progress"' in page and f"0 / {WORDS} explained" in page
    cancelled = owner.client.post(reverse("cancel_run", args=[run.pk]), HTTP_HX_REQUEST="true")
    cancelled = cancelled.content.decode()
    assert f"cancelled: 0 / {WORDS} explained" in cancelled
    row = Explanation.objects.filter(status="cancelled").first()
    assert stranger.client.post(reverse("cancel_explanation", args=[row.pk])).status_code == 404
    assert stranger.client.post(reverse("cancel_run", args=[run.pk])).status_code == 404
