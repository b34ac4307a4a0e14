"""Explaining several tokens at once: one request, rows in position order, one job for the rows that
need work (PostgreSQL, the real views and domain functions; the job is read, not sent)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction
from django.urls import reverse

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected, ExplainSettings, request_explanations
from nlaweb.jobs.broker import Job
from tests.factories import snapshot_of
from tests.live import wait_until
from workers.contracts import TASK_EXPLAIN

pytestmark = pytest.mark.django_db


def _snapshot(conversation: Conversation, n_tokens: int = 12) -> Snapshot:
    return snapshot_of(conversation, [("user", "My cat", n_tokens)])


def _stored(snapshot: Snapshot, position: int, status: str, text: str = "") -> Explanation:
    return Explanation.objects.create(
        snapshot=snapshot,
        position=position,
        source_id=snapshot.source_id,
        settings_key=ExplainSettings().key(),
        status=status,
        text=text,
        error="boom" if status == "failed" else "",
    )


def _explain_job(*rows: Explanation) -> Job:
    return Job(TASK_EXPLAIN, [[str(row.id) for row in rows]])


def test_several_positions_give_rows_in_position_order_and_one_job_for_them_all(
    owner, django_capture_on_commit_callbacks
):
    snapshot = _snapshot(start_conversation(owner.user))
    with django_capture_on_commit_callbacks() as callbacks:
        rows = request_explanations(snapshot, [9, 2, 5])
    assert [row.position for row in rows] == [2, 5, 9]
    assert {row.status for row in rows} == {"queued"}
    assert callbacks == [_explain_job(*rows)]
    assert Explanation.objects.count() == 3


def test_stored_rows_are_returned_as_they_are_and_only_new_or_failed_ones_are_queued(
    owner, django_capture_on_commit_callbacks
):
    snapshot = _snapshot(start_conversation(owner.user))
    done = _stored(snapshot, 2, "done", text="A cat.")
    running = _stored(snapshot, 4, "running")
    failed = _stored(snapshot, 6, "failed")
    with django_capture_on_commit_callbacks() as callbacks:
        rows = request_explanations(snapshot, [8, 6, 4, 2])
    assert [row.pk for row in rows[:3]] == [done.pk, running.pk, failed.pk]
    assert [(row.position, row.status) for row in rows] == [
        (2, "done"),
        (4, "running"),
        (6, "queued"),
        (8, "queued"),
    ]
    assert (rows[0].text, rows[2].error) == ("A cat.", "")
    assert callbacks == [_explain_job(rows[2], rows[3])]


def test_positions_that_are_all_stored_enqueue_nothing(owner, django_capture_on_commit_callbacks):
    snapshot = _snapshot(start_conversation(owner.user))
    stored = [_stored(snapshot, 1, "done"), _stored(snapshot, 3, "queued")]
    with django_capture_on_commit_callbacks() as callbacks:
        rows = request_explanations(snapshot, [3, 1])
    assert rows == stored
    assert callbacks == []


@pytest.mark.parametrize(
    ("positions", "sentence"),
    [
        ([], "Pick a token to explain."),
        (list(range(17)), "Pick at most 16 tokens at a time; 17 were selected."),
        ([3, 5, 3], "Pick each token once: token position 3 was selected more than once."),
        (
            [4, 1, 4, 1],
            "Pick each token once: token positions 1 and 4 were selected more than once.",
        ),
        (
            [1, 40, 12],
            "Token positions 12 and 40 are outside this conversation, which has 12 tokens "
            "(positions 0 to 11).",
        ),
        ([-1], "Token position -1 is outside this conversation, which has 12 tokens"),
    ],
)
def test_a_refused_request_gets_one_sentence_and_stores_and_enqueues_nothing(
    owner, django_capture_on_commit_callbacks, positions, sentence
):
    snapshot = _snapshot(start_conversation(owner.user), n_tokens=12)
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(ExplainRejected) as refused,
    ):
        request_explanations(snapshot, positions)
    assert str(refused.value).startswith(sentence)
    assert Explanation.objects.count() == 0
    assert callbacks == []


def test_it_accepts_exactly_16_positions(owner, django_capture_on_commit_callbacks):
    snapshot = _snapshot(start_conversation(owner.user), n_tokens=20)
    with django_capture_on_commit_callbacks() as callbacks:
        rows = request_explanations(snapshot, list(range(16)))
    assert [row.position for row in rows] == list(range(16))
    assert callbacks == [_explain_job(*rows)]


def test_the_explain_view_takes_several_positions_and_renders_one_section_each(
    owner, django_capture_on_commit_callbacks
):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation)
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner.client.post(
            reverse("explain", args=[conversation.id, snapshot.id]),
            {"position": ["7", "3"]},
            HTTP_HX_REQUEST="true",
        )
    html = response.content.decode()
    first, second = Explanation.objects.order_by("position")
    assert (first.position, second.position) == (3, 7)
    assert html.count('<section class="explanation') == 2
    assert html.index(f'data-explanation-id="{first.id}"') < html.index(
        f'data-explanation-id="{second.id}"'
    )
    assert html.count('data-role="text"') == 2
    assert callbacks == [_explain_job(first, second)]


@pytest.mark.parametrize(
    ("posted", "sentence"),
    [
        ({}, "Pick a token to explain."),
        ({"position": ["2", "x"]}, "Token positions must be whole numbers; got &#x27;x&#x27;."),
        ({"position": ["-3"]}, "Token positions start at 0; got -3."),
        (
            {"position": [str(p) for p in range(17)]},
            "Pick at most 16 tokens at a time; 17 were selected.",
        ),
        ({"position": ["5", "5"]}, "token position 5 was selected more than once."),
    ],
)
def test_the_explain_view_answers_a_bad_selection_with_its_sentence(owner, posted, sentence):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation)
    url = reverse("explain", args=[conversation.id, snapshot.id])
    response = owner.client.post(url, posted, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'role="alert"' in html and sentence in html
    assert "<section" not in html
    assert Explanation.objects.count() == 0


def test_a_stranger_cannot_explain_several_tokens_of_someone_elses_conversation(owner, stranger):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation)
    response = stranger.client.post(
        reverse("explain", args=[conversation.id, snapshot.id]), {"position": ["1", "2"]}
    )
    assert response.status_code == 404
    assert Explanation.objects.count() == 0


def test_one_explanations_panel_url_renders_only_its_section_to_swap_in_place(owner):
    snapshot = _snapshot(start_conversation(owner.user))
    explanation = _stored(snapshot, 4, "running")
    html = owner.client.get(reverse("explanation_panel", args=[explanation.id])).content.decode()
    assert html.strip().startswith('<section class="explanation running"')
    assert html.strip().endswith("</section>")
    assert html.count("<section") == 1
    assert f'data-explanation-id="{explanation.id}"' in html


def test_the_page_offers_the_selection_form_hidden_until_tokens_are_selected(owner):
    conversation = start_conversation(owner.user)
    _snapshot(conversation)
    page = owner.client.get(reverse("conversation", args=[conversation.id])).content.decode()
    assert 'id="selection-form"' in page and 'data-max-positions="16"' in page
    start = page.index('id="selection-form"')
    form = page[start : page.index("</form>", start)]
    assert " hidden " in form and "Explain 0 tokens" in form and ">Clear</button>" in form


@pytest.mark.django_db(transaction=True)
def test_a_row_a_concurrent_request_created_first_is_returned_but_left_to_its_job(
    owner, django_capture_on_commit_callbacks
):
    """The other request inserts position 5 and holds its transaction open; ours blocks on the
    unique key, then takes the committed row without enqueueing it again."""
    snapshot = _snapshot(start_conversation(owner.user))
    inserted, theirs = threading.Event(), []

    def other_request() -> None:
        try:
            with transaction.atomic():
                theirs.append(_stored(snapshot, 5, "queued"))
                inserted.set()
                wait_until(_someone_waits_for_a_lock, 30, "our insert to wait for theirs")
        finally:
            inserted.set()
            connections.close_all()

    other = threading.Thread(target=other_request)
    other.start()
    assert inserted.wait(30)
    with transaction.atomic():  # rolled back: the job is read here, never sent
        with django_capture_on_commit_callbacks() as callbacks:
            rows = request_explanations(snapshot, [7, 5])
        transaction.set_rollback(True)
    other.join(30)
    assert [row.position for row in rows] == [5, 7]
    assert rows[0].pk == theirs[0].pk
    assert callbacks == [_explain_job(rows[1])]


def _someone_waits_for_a_lock() -> bool:
    """A backend of this database waits for another transaction to end (as an insert does on a
    unique key that an open transaction has just inserted)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.datname = current_database() AND NOT l.granted "
            "AND l.locktype = 'transactionid'"
        )
        return bool(cursor.fetchone()[0])


def test_a_row_whose_worker_died_is_queued_again_on_the_next_click(
    owner, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    snapshot = _snapshot(start_conversation(owner.user))
    long_ago = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 5)
    lost = _stored(snapshot, 3, "running")
    Explanation.objects.filter(pk=lost.pk).update(started_at=long_ago)
    busy = _stored(snapshot, 5, "running")
    Explanation.objects.filter(pk=busy.pk).update(started_at=timezone.now())
    with django_capture_on_commit_callbacks() as callbacks:
        rows = request_explanations(snapshot, [3, 5])
    assert [r.status for r in rows] == ["queued", "running"]
    assert callbacks == [Job(TASK_EXPLAIN, [[str(lost.pk)]])]
