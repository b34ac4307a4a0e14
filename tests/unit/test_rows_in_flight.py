"""One person may have at most MAX_ROWS_IN_FLIGHT_PER_USER explanations queued or running; asking
for more gets a sentence and stores nothing, and stored ones stay lookups (PostgreSQL)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected, request_explanations, rows_in_flight
from tests.factories import snapshot_of

pytestmark = pytest.mark.django_db

FULL = (
    "You already have 64 explanations waiting or running, and at most 64 may wait at a time, so "
    "these 16 cannot be queued yet; ask again when some have finished."
)


def _snapshot(persona, n_tokens: int = 100):
    return snapshot_of(start_conversation(persona.user), [("user", "My cat", n_tokens)])


def test_one_person_may_have_at_most_64_explanations_waiting_or_running(
    owner, stranger, settings, django_capture_on_commit_callbacks
):
    assert settings.MAX_ROWS_IN_FLIGHT_PER_USER == 64
    snapshot = _snapshot(owner)
    with django_capture_on_commit_callbacks():
        for start in range(0, 64, 16):
            request_explanations(snapshot, list(range(start, start + 16)))
    assert rows_in_flight(owner.user.pk) == 64

    with pytest.raises(ExplainRejected) as refused:
        request_explanations(snapshot, list(range(64, 80)))
    assert str(refused.value) == FULL
    assert Explanation.objects.count() == 64

    # Asking again for rows already queued is a lookup, not more work; another person is not held.
    with django_capture_on_commit_callbacks() as callbacks:
        assert len(request_explanations(snapshot, [0, 1])) == 2
        request_explanations(_snapshot(stranger), [3])
    assert len(callbacks) == 1

    Explanation.objects.filter(position__lt=16).update(status="done")
    with django_capture_on_commit_callbacks() as callbacks:
        request_explanations(snapshot, list(range(64, 80)))
    assert len(callbacks) == 1 and rows_in_flight(owner.user.pk) == 64


def test_the_panel_says_the_sentence_when_the_cap_is_reached(owner, settings):
    settings.MAX_ROWS_IN_FLIGHT_PER_USER = 2
    snapshot = _snapshot(owner)
    url = reverse("explain", args=[snapshot.conversation_id, snapshot.id])
    owner.client.post(url, {"position": ["1", "2"]})
    html = owner.client.post(url, {"position": ["3"]}).content.decode()
    assert 'role="alert"' in html
    assert "You already have 2 explanations waiting or running, and at most 2" in html
    assert Explanation.objects.count() == 2
