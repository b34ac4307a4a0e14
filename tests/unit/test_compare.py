"""Compare a token's explanation with the aligned token of another branch (issue 8 item 4)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, Message, Snapshot, hash_tokens
from nlaweb.explanations import compare
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import request_explanations

pytestmark = pytest.mark.django_db

USER = (["<s>", "U:", " My", " cat", " sleeps", "\n"], [1, 2, 10, 11, 12, 3])
CAT = (["A:", " The", " cat", " naps", "\n"], [4, 20, 11, 21, 3])
DOG = (["A:", " The", " dog", " naps", "\n"], [4, 20, 13, 21, 3])
LONGER = (["A:", " A", " big", " dog", " naps", "\n"], [4, 22, 23, 13, 21, 3])
NAPS = 6 + 3  # " naps" in the replies CAT and DOG


def _reply(conversation: Conversation, user: Message, content: str, tokens) -> Snapshot:
    reply = Message.objects.create(
        conversation=conversation, parent=user, role="assistant", content=content
    )
    texts, ids = USER[0] + tokens[0], USER[1] + tokens[1]
    spans = [
        {"message_id": str(user.id), "role": "user", "start": 0, "end": 6},
        {"message_id": str(reply.id), "role": "assistant", "start": 6, "end": len(ids)},
    ]
    conversation.head = reply
    conversation.save()
    return Snapshot.objects.create(
        conversation=conversation, leaf=reply, source_id=conversation.source_id, token_ids=ids,
        token_texts=texts, spans=spans, tokens_hash=hash_tokens(ids),
    )  # fmt: skip


@pytest.fixture
def tree(owner):
    conversation = start_conversation(owner.user)
    user = Message.objects.create(conversation=conversation, role="user", content="My cat sleeps")
    cat = _reply(conversation, user, "The cat naps", CAT)
    dog = _reply(conversation, user, "The dog naps", DOG)
    longer = _reply(conversation, user, "A big dog naps", LONGER)
    return conversation, cat, dog, longer


def test_other_branches_are_listed_by_where_they_part(tree):
    _, cat, dog, longer = tree
    (row,) = request_explanations(cat, [NAPS])
    listed = compare.branches(row)
    assert [b.snapshot for b in listed] == [dog, longer]
    assert listed[0].label == "assistant · message 2: “The dog naps”"
    # A token before the branches part has the same activation everywhere: nothing to compare.
    (shared,) = request_explanations(cat, [3])
    assert compare.branches(shared) == []


def test_the_same_token_at_the_same_position_is_aligned_else_the_person_picks(tree):
    _, cat, dog, longer = tree
    (row,) = request_explanations(cat, [NAPS])
    assert compare.aligned_position(row, dog) == NAPS
    assert compare.aligned_position(row, longer) is None
    # " cat" → " dog" swapped one token for one: the same position, no second pick.
    (cat_row,) = request_explanations(cat, [NAPS - 1])
    assert compare.aligned_position(cat_row, dog) == NAPS - 1
    assert compare.aligned_position(cat_row, longer) is None  # 6 tokens for 5: the person picks
    assert [t.text for t in compare.pick_tokens(row, longer)] == [" A", " big", " dog", " naps"]


def test_comparing_shows_both_explanations_side_by_side_and_queues_the_others_row(
    tree, owner, stranger, django_capture_on_commit_callbacks
):
    _, cat, dog, longer = tree
    (row,) = request_explanations(cat, [NAPS])
    Explanation.objects.filter(pk=row.pk).update(status="done", text="Resting.", relative_mse=0.3)
    page = owner.client.get(reverse("compare_branches", args=[row.id])).content.decode()
    assert "The dog naps" in page and "A big dog naps" in page
    with django_capture_on_commit_callbacks() as sent:
        side = owner.client.post(reverse("compare_with", args=[row.id, dog.id])).content.decode()
    theirs = Explanation.objects.get(snapshot=dog, position=NAPS)
    assert len(sent) == 1 and 'class="compare side-by-side"' in side
    assert "Resting." in side and f'data-explanation-id="{theirs.id}"' in side
    assert side.count('<section class="explanation ') == 2  # both columns are panel sections
    picker = owner.client.post(reverse("compare_with", args=[row.id, longer.id])).content.decode()
    assert "pick the one to compare with" in picker and "Explanation" not in picker
    picked = owner.client.post(
        reverse("compare_with", args=[row.id, longer.id]), {"position": NAPS + 1}
    ).content.decode()
    assert Explanation.objects.filter(snapshot=longer, position=NAPS + 1).exists()
    assert "side-by-side" in picked
    for response in (
        stranger.client.get(reverse("compare_branches", args=[row.id])),
        stranger.client.post(reverse("compare_with", args=[row.id, dog.id])),
    ):
        assert response.status_code == 404
