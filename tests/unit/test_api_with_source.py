"""The API's door to "explain with…": a stored conversation (cacheId) explained by another NLA of
the same target model, under that source's own rows; a source of another target refused."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from nlaweb.api.models import ApiKey
from nlaweb.api.ratelimit import forget_windows
from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations.models import Explanation
from tests.factories import snapshot_of
from tests.source_files import three_sources  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("three_sources")]


@pytest.fixture
def key(owner) -> str:
    forget_windows()
    return ApiKey.objects.issue(owner.user, "tests")[1]


def _post(body: dict, key: str):
    return Client().post(
        "/api/v1/explain", json.dumps(body), content_type="application/json", HTTP_X_API_KEY=key
    )


def test_a_cache_id_is_explained_by_another_source_of_its_target(owner, key, settings):
    settings.API_WAIT_SECONDS = 1  # no worker here: the answer shows the rows as they stand
    conversation = start_conversation(owner.user)
    snapshot = snapshot_of(conversation)
    body = {"cacheId": str(conversation.id), "positions": [2, -1], "nlaSourceId": "far"}
    response = _post(body, key)
    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["nlaSourceId"], answer["layer_index"]) == ("far", 1)
    assert answer["cacheId"] == str(conversation.id)
    rows = Explanation.objects.filter(snapshot=snapshot)
    assert sorted(rows.values_list("source_id", "position")) == [
        ("far", 2),
        ("far", len(snapshot.token_ids) - 1),
    ]
    # The conversation's own source answers without nlaSourceId, with rows of its own.
    default = _post({"cacheId": str(conversation.id), "positions": [2]}, key).json()
    assert default["nlaSourceId"] == "near"
    assert rows.filter(source_id="near").count() == 1


def test_a_source_of_another_target_is_refused_for_a_cache_id(owner, key, tmp_path):
    conversation = start_conversation(owner.user)
    snapshot_of(conversation)
    body = {"cacheId": str(conversation.id), "positions": [2], "nlaSourceId": "other-model"}
    response = _post(body, key)
    assert response.status_code == 400
    assert response.json()["detail"] == (
        f"Conversation {conversation.id} uses the NLA source 'near', not 'other-model': "
        f"'other-model' reads another target model ({tmp_path}/another-target) than 'near' "
        f"({tmp_path}/target): its tokens and activations are not this conversation's, so it "
        "cannot explain this token."
    )
    assert not Explanation.objects.exists()
