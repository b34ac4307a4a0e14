"""Model text with NUL (a byte-level tokenizer decodes byte 0 to it) is stored, as U+FFFD:
PostgreSQL's text and jsonb refuse NUL, and a reply that could not be stored stayed "generating"
until the sweeper failed it as if its worker had died (benchmarks/load.py, 3 of 20 replies)."""

from __future__ import annotations

import pytest

from nlaweb.chat.conversation import send_message, start_conversation
from nlaweb.chat.models import Message, Snapshot
from nlaweb.jobs.django_store import DjangoStore

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_reply_and_its_tokens_with_nul_are_stored_with_replacement_characters(owner):
    conversation = start_conversation(owner.user)
    reply = send_message(conversation, "hello")
    store = DjangoStore(job_id="job-1")
    store.finish_reply(str(reply.pk), "a\x00b")
    store.save_snapshot(str(reply.pk), "demo", [1, 0, 2], ["a", "\x00", "b"], [])
    reply.refresh_from_db()
    assert (reply.status, reply.content) == (Message.Status.DONE, "a\ufffdb")
    assert Snapshot.objects.get(leaf=reply).token_texts == ["a", "\ufffd", "b"]


def test_a_failed_reply_keeps_its_text_with_nul_replaced(owner):
    reply = send_message(start_conversation(owner.user), "hello")
    DjangoStore(job_id="job-1").fail_reply(str(reply.pk), "cut\x00", "It failed.")
    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.error) == ("failed", "cut\ufffd", "It failed.")


def test_an_explanation_text_with_nul_is_stored(owner, django_capture_on_commit_callbacks):
    from nlaweb.explanations.models import Explanation
    from nlaweb.explanations.request import request_explanations
    from tests.factories import snapshot_of

    snapshot = snapshot_of(start_conversation(owner.user), [("user", "My cat", 20)])
    with django_capture_on_commit_callbacks():
        (row,) = request_explanations(snapshot, [3])
    # Running under the job that stores it (results are fenced by the row's job id).
    Explanation.objects.filter(pk=row.pk).update(status=Explanation.Status.RUNNING, job_id="job-1")
    DjangoStore(job_id="job-1").finish_explanation(str(row.pk), {"text": "cat\x00s", "mse": 0.5})
    row.refresh_from_db()
    assert (row.status, row.text, row.mse) == ("done", "cat\ufffds", 0.5)
