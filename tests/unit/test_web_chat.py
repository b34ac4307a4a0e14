"""Chat and explanation requests through the Django views and domain functions (PostgreSQL)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.urls import reverse

from nlaweb.chat.conversation import send_message, start_conversation
from nlaweb.chat.models import Conversation, Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected, ExplainSettings, request_explanation
from nlaweb.thread.view import thread_view
from tests.factories import snapshot_of

pytestmark = pytest.mark.django_db


def _snapshot(conversation: Conversation, n_tokens: int = 12) -> Snapshot:
    return snapshot_of(
        conversation, [("user", "My cat", 6), ("assistant", "Cats nap.", n_tokens - 6)]
    )


def test_sending_a_message_stores_it_and_a_generating_reply(
    owner, django_capture_on_commit_callbacks
):
    conversation = start_conversation(owner.user)
    url = reverse("send", args=[conversation.id])
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner.client.post(
            url, {"content": "  My cat loves to sleep  "}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200
    conversation.refresh_from_db()
    user_msg, reply = conversation.path()
    assert (user_msg.role, user_msg.content) == ("user", "My cat loves to sleep")
    assert (reply.role, reply.status) == ("assistant", "generating")
    assert len(callbacks) == 1  # one reply job enqueued after commit
    assert f'data-streaming-message="{reply.id}"' in response.content.decode()


def test_an_empty_message_gets_a_sentence_and_stores_nothing(owner):
    conversation = start_conversation(owner.user)
    response = owner.client.post(reverse("send", args=[conversation.id]), {"content": "   "})
    assert "Write a message first: an empty message cannot be sent." in response.content.decode()
    assert conversation.messages.count() == 0


def test_an_over_long_message_gets_a_sentence_naming_the_limit(owner):
    conversation = start_conversation(owner.user)
    limit = settings.MAX_MESSAGE_CHARS
    response = owner.client.post(
        reverse("send", args=[conversation.id]), {"content": "x" * (limit + 1)}
    )
    assert (
        f"This message has {limit + 1} characters; the limit is {limit}."
        in response.content.decode()
    )
    assert conversation.messages.count() == 0


def test_a_second_message_waits_for_the_reply_in_progress(owner):
    conversation = start_conversation(owner.user)
    send_message(conversation, "first")
    response = owner.client.post(reverse("send", args=[conversation.id]), {"content": "second"})
    assert "Wait for the current reply to finish" in response.content.decode()
    assert conversation.messages.count() == 2


def test_a_stranger_cannot_see_or_post_to_a_conversation(owner, stranger):
    conversation = start_conversation(owner.user)
    assert stranger.client.get(reverse("conversation", args=[conversation.id])).status_code == 404
    response = stranger.client.post(reverse("send", args=[conversation.id]), {"content": "hi"})
    assert response.status_code == 404
    assert conversation.messages.count() == 0


def test_the_thread_shows_token_chips_at_their_positions(owner):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation)
    view = thread_view(conversation)
    assert view.snapshot == snapshot
    assert [c.position for c in view.messages[0].chips] == list(range(0, 6))
    assert [c.position for c in view.messages[1].chips] == list(range(6, 12))
    page = owner.client.get(reverse("conversation", args=[conversation.id])).content.decode()
    assert 'data-position="11"' in page


def test_clicking_a_token_queues_one_explanation_and_a_second_click_is_a_lookup(
    owner, django_capture_on_commit_callbacks
):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation)
    url = reverse("explain", args=[conversation.id, snapshot.id])
    with django_capture_on_commit_callbacks() as first:
        response = owner.client.post(url, {"position": 7}, HTTP_HX_REQUEST="true")
    explanation = Explanation.objects.get()
    assert (explanation.status, explanation.stage, explanation.position) == ("queued", "queued", 7)
    assert len(first) == 1
    assert f'data-explanation-id="{explanation.id}"' in response.content.decode()
    with django_capture_on_commit_callbacks() as second:
        owner.client.post(url, {"position": 7}, HTTP_HX_REQUEST="true")
    assert len(second) == 0
    assert Explanation.objects.count() == 1


def test_a_failed_explanation_is_retried_on_the_next_click(
    owner, django_capture_on_commit_callbacks
):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation)
    failed = Explanation.objects.create(
        snapshot=snapshot,
        position=3,
        source_id=snapshot.source_id,
        settings_key=ExplainSettings().key(),
        status="failed",
        error="boom",
    )
    with django_capture_on_commit_callbacks() as callbacks:
        again = request_explanation(snapshot, 3)
    assert again.pk == failed.pk
    assert (again.status, again.error) == ("queued", "")
    assert len(callbacks) == 1


def test_a_position_outside_the_sequence_is_refused_with_a_sentence(owner):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation, n_tokens=12)
    with pytest.raises(
        ExplainRejected, match="Token position 12 is outside this conversation, which has 12 tokens"
    ):
        request_explanation(snapshot, 12)
    response = owner.client.post(
        reverse("explain", args=[conversation.id, snapshot.id]), {"position": 40}
    )
    assert "Token position 40 is outside this conversation" in response.content.decode()
    assert Explanation.objects.count() == 0


def test_a_stranger_cannot_explain_tokens_of_someone_elses_conversation(owner, stranger):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation)
    response = stranger.client.post(
        reverse("explain", args=[conversation.id, snapshot.id]), {"position": 1}
    )
    assert response.status_code == 404
    assert Explanation.objects.count() == 0


def test_model_text_is_escaped_in_the_page(owner):
    conversation = start_conversation(owner.user)
    snapshot = _snapshot(conversation)
    snapshot.token_texts[8] = "<script>alert(1)</script>"
    snapshot.save()
    explanation = Explanation.objects.create(
        snapshot=snapshot,
        position=8,
        source_id=snapshot.source_id,
        settings_key="k",
        status="done",
        text="<img src=x onerror=alert(1)>",
        mse=0.1,
        cosine=0.9,
    )
    page = owner.client.get(reverse("conversation", args=[conversation.id])).content.decode()
    panel = owner.client.get(reverse("explanation_panel", args=[explanation.id])).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "<img src=x" not in panel and "&lt;img src=x" in panel


def test_staff_see_the_configured_sources_in_the_admin(admin_client, client):
    page = admin_client.get(reverse("nla_sources")).content.decode()
    assert "smollm2-demo-l8" in page and "demo NLA, uncalibrated" in page
    assert client.get(reverse("nla_sources")).status_code == 302  # not staff: to the login page


def test_a_token_of_the_templates_preamble_is_marked_unreliable():
    from types import SimpleNamespace

    from workers.nla.types import EARLY_WARNING, TEMPLATE_WARNING
    from workers.pipeline import warnings_for

    def result(position: int, warnings: list[str]) -> SimpleNamespace:
        return SimpleNamespace(position=position, warnings=warnings)

    assert warnings_for(result(15, []), template_end=21) == [TEMPLATE_WARNING]
    assert warnings_for(result(3, [EARLY_WARNING]), template_end=21) == [EARLY_WARNING]
    assert warnings_for(result(21, []), template_end=21) == []
    assert warnings_for(result(15, []), template_end=0) == []
