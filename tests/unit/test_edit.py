"""Editing, regenerating, continuing and branch switches on PostgreSQL: every change adds to the tree
and moves the head; earlier paths keep their snapshots and explanations (issue 8)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.urls import reverse

from nlaweb.chat import edit
from nlaweb.chat.conversation import send_message, start_conversation
from nlaweb.chat.models import Conversation, Message
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import request_explanations
from nlaweb.jobs.broker import Job
from nlaweb.thread.view import thread_view
from tests.factories import snapshot_of
from workers.contracts import TASK_REPLY

pytestmark = pytest.mark.django_db


def _chat(owner) -> tuple[Conversation, Message, Message]:
    conversation = start_conversation(owner.user)
    snapshot_of(conversation, [("user", "My cat sleeps", 6), ("assistant", "A cat naps.", 6)])
    conversation.refresh_from_db()
    reply = conversation.head
    return conversation, reply.parent, reply


def test_editing_a_user_message_adds_a_sibling_and_a_new_reply_and_keeps_the_old_branch(
    owner, django_capture_on_commit_callbacks
):
    conversation, user, reply = _chat(owner)
    (explained,) = request_explanations(reply.snapshot, [3])
    with django_capture_on_commit_callbacks() as sent:
        head = edit.edit_message(conversation, str(user.id), "My dog sleeps")
    sibling = head.parent
    assert (sibling.parent_id, sibling.content, sibling.role) == (None, "My dog sleeps", "user")
    assert (head.role, head.status) == ("assistant", "generating")
    assert sent == [Job(TASK_REPLY, [str(head.id)])]
    conversation.refresh_from_db()
    assert conversation.head == head
    # The old branch is untouched: its messages, its snapshot and its explanation.
    assert Message.objects.get(pk=user.pk).content == "My cat sleeps"
    assert reply.deepest_leaf() == reply and Explanation.objects.get(pk=explained.pk)
    assert [m.branches.count for m in thread_view(conversation).messages] == [2, 1]


def test_editing_an_assistant_message_keeps_the_persons_text_and_only_tokenizes_it(
    owner, django_capture_on_commit_callbacks
):
    conversation, user, reply = _chat(owner)
    with django_capture_on_commit_callbacks() as sent:
        head = edit.edit_message(conversation, str(reply.id), "A dog naps.")
    assert (head.parent_id, head.content, head.origin) == (user.pk, "A dog naps.", "edited")
    assert head.status == "generating"  # until the worker has stored its snapshot
    assert sent == [Job(TASK_REPLY, [str(head.id)])]


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (lambda c, m: edit.edit_message(c, str(m.id), m.content), "The text is unchanged"),
        (lambda c, m: edit.regenerate(c, str(m.parent_id), 0.7, 1), "Only an assistant reply"),
        (lambda c, m: edit.regenerate(c, str(m.id), 3.0, 1), "Temperature must be between 0"),
        (lambda c, m: edit.continue_reply(c, str(m.parent_id)), "Only an assistant reply"),
        (
            lambda c, m: edit.edit_message(c, "00000000-0000-0000-0000-000000000000", "x"),
            "not part of this conversation",
        ),
    ],
)
def test_impossible_changes_are_refused_with_a_sentence_and_change_nothing(owner, change, sentence):
    conversation, _, reply = _chat(owner)
    before = Message.objects.count()
    with pytest.raises(edit.EditRejected, match=sentence):
        change(conversation, reply)
    assert Message.objects.count() == before


def test_a_reply_still_being_written_cannot_be_edited(owner):
    conversation = start_conversation(owner.user)
    generating = send_message(conversation, "Hello")
    with pytest.raises(edit.EditRejected, match="Wait for this reply to finish before editing"):
        edit.edit_message(conversation, str(generating.id), "Hi")


def test_regenerating_stores_the_sampling_and_continuing_starts_from_the_text(owner):
    conversation, user, reply = _chat(owner)
    again = edit.regenerate(conversation, str(reply.id), 0.7, 1234)
    assert (again.parent_id, again.origin, again.temperature, again.seed) == (
        user.pk,
        "regenerated",
        0.7,
        1234,
    )
    # Only the last reply of a branch can be continued; a regenerated placeholder is still writing.
    with pytest.raises(edit.EditRejected, match="Wait for this reply to finish"):
        edit.continue_reply(conversation, str(again.id))
    Message.objects.filter(pk=again.pk).update(status="done", content="Cats nap a lot")
    more = edit.continue_reply(conversation, str(again.id))
    assert (more.content, more.origin, more.seed) == ("Cats nap a lot", "continued", 1234)


def test_switching_branches_moves_the_head_to_the_deepest_leaf_of_the_chosen_one(owner):
    conversation, user, reply = _chat(owner)
    head = edit.edit_message(conversation, str(user.id), "My dog sleeps")
    assert edit.switch_branch(conversation, str(user.id)) == reply  # back: the old reply
    view = thread_view(Conversation.objects.get(pk=conversation.pk))
    assert [m.message for m in view.messages] == [user, reply]
    first = view.messages[0].branches
    assert (first.index, first.count, first.previous, first.next) == (1, 2, None, head.parent)
    assert edit.switch_branch(conversation, str(head.parent_id)) == head


def test_a_page_can_show_a_branch_by_its_leaf_without_moving_the_head(owner):
    conversation, user, reply = _chat(owner)
    edit.edit_message(conversation, str(user.id), "My dog sleeps")
    page = owner.client.get(reverse("conversation", args=[conversation.id]) + f"?at={reply.id}")
    assert f'data-leaf="{reply.id}"' in page.content.decode()
    conversation.refresh_from_db()
    assert conversation.head != reply


def test_sending_from_a_shown_branch_appends_to_that_branch(owner):
    conversation, user, reply = _chat(owner)
    edit.edit_message(conversation, str(user.id), "My dog sleeps")
    placeholder = send_message(conversation, "And then?", after=str(reply.id))
    assert placeholder.parent.parent_id == reply.pk


def test_the_views_answer_with_the_chat_and_a_readable_error(owner, stranger):
    conversation, user, reply = _chat(owner)
    url = reverse("regenerate", args=[conversation.id, reply.id])
    page = owner.client.post(url, {"temperature": "hot", "seed": "1"}, HTTP_HX_REQUEST="true")
    page = page.content.decode()
    assert "Temperature must be a number between 0 and 2." in page
    assert Message.objects.count() == 2
    page = owner.client.post(url, {"temperature": "0.7", "seed": "5"}, HTTP_HX_REQUEST="true")
    page = page.content.decode()
    assert "temperature 0.7 · seed 5" in page  # the sampling shows from the start
    assert Message.objects.filter(origin="regenerated", seed=5).exists()
    editor = owner.client.get(reverse("editor", args=[conversation.id, user.id])).content.decode()
    assert "My cat sleeps</textarea>" in editor
    for name, args in [
        ("editor", [conversation.id, user.id]),
        ("save_edit", [conversation.id, user.id]),
        ("regenerate", [conversation.id, reply.id]),
        ("continue_reply", [conversation.id, reply.id]),
        ("switch_branch", [conversation.id]),
    ]:
        call = stranger.client.get if name == "editor" else stranger.client.post
        assert call(reverse(name, args=args), {"content": "x", "to": user.id}).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_two_edits_at_once_make_two_siblings_and_lose_nothing(owner):
    conversation, user, _ = _chat(owner)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def edit_to(text: str) -> None:
        try:
            start.wait(timeout=30)
            edit.edit_message(conversation, str(user.id), text)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=edit_to, args=(t,)) for t in ("My dog", "My owl")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    siblings = {m.content for m in user.siblings()}
    assert siblings == {"My cat sleeps", "My dog", "My owl"}
    conversation.refresh_from_db()
    assert conversation.head.parent.content in {"My dog", "My owl"}
    assert (
        Message.objects.filter(origin="written", role="assistant", status="generating").count() == 2
    )
