"""Issue 14.1 on the server: tints, the open outline and open sections belong to a token prefix,
never to a bare position that another branch's token also holds."""

from __future__ import annotations

import pytest

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Message, Snapshot, hash_tokens, prefix_hashes, prefix_key
from nlaweb.explanations.request import explained_rows
from nlaweb.thread.panel import opened
from nlaweb.thread.view import thread_view
from tests.unit.test_page import LEAD, USER, USER_CONTENT, _done, _page, _store, _token_classes

pytestmark = pytest.mark.django_db

ZEBRA = ["<|im_start|>", "assistant", "\n", "I", " prefer", " the", " zebra", ".", "<|im_end|>"]
DOG = [*ZEBRA[:6], " dog", *ZEBRA[7:]]
ANIMAL = len(LEAD) + len(USER) + 6  # " zebra" on one branch, " dog" on the other


def _branches(owner) -> tuple[Snapshot, Snapshot]:
    """A user message with two alternative replies: "I prefer the zebra." and "I prefer the dog."."""
    conversation = start_conversation(owner.user)
    zebra = _store(conversation, [("user", USER_CONTENT, USER), ("assistant", "x", ZEBRA)])
    Message.objects.filter(pk=zebra.leaf_id).update(content="I prefer the zebra.")
    dog_leaf = Message.objects.create(
        conversation=conversation,
        parent=zebra.leaf.parent,
        role="assistant",
        content="I prefer the dog.",
    )
    ids = list(zebra.token_ids)
    ids[ANIMAL] += 1  # another token at the same position
    spans = [dict(s) for s in zebra.spans]
    spans[-1]["message_id"] = str(dog_leaf.id)
    dog = Snapshot.objects.create(
        conversation=conversation,
        leaf=dog_leaf,
        source_id=conversation.source_id,
        token_ids=ids,
        token_texts=[*zebra.token_texts[: len(LEAD) + len(USER)], *DOG],
        spans=spans,
        tokens_hash=hash_tokens(ids),
    )
    conversation.head = dog_leaf
    conversation.save()
    return zebra, dog


def test_the_other_branchs_row_at_the_same_position_neither_tints_nor_opens(owner):
    zebra, dog = _branches(owner)
    row = _done(dog, ANIMAL, confidence="low")
    assert row.prefix_hash == prefix_hashes(dog.token_ids)[ANIMAL]
    assert explained_rows(zebra) == {}
    chips = {
        c.position: c
        for m in thread_view(zebra.conversation, zebra.leaf).messages
        for c in m.chips or []
    }
    assert chips[ANIMAL].explained is None
    assert chips[ANIMAL].prefix == prefix_hashes(zebra.token_ids)[ANIMAL] != row.prefix_hash
    assert opened(zebra.conversation, [str(row.id)], set(prefix_hashes(zebra.token_ids))) == []
    assert opened(zebra.conversation, [str(row.id)], set(prefix_hashes(dog.token_ids))) == [row]


def test_a_link_naming_the_other_branchs_row_opens_nothing_on_this_branch(owner):
    zebra, dog = _branches(owner)
    row = _done(dog, ANIMAL, confidence="low")
    page = _page(owner, zebra.conversation, f"?at={zebra.leaf_id}&open={row.id}")
    assert f'data-leaf="{zebra.leaf_id}"' in page and "> zebra<" in page
    assert f'data-explanation-id="{row.id}"' not in page
    assert "open" not in _token_classes(page, ANIMAL).split()
    assert "explained" not in _token_classes(page, ANIMAL).split()

    page = _page(owner, dog.conversation, f"?at={dog.leaf_id}&open={row.id}")
    assert f'data-explanation-id="{row.id}"' in page
    assert {"open", "explained", "low"} <= set(_token_classes(page, ANIMAL).split())
    assert f'data-prefix="{prefix_key(row.prefix_hash)}"' in page


def test_a_row_of_a_shared_prefix_opens_on_both_branches(owner):
    zebra, dog = _branches(owner)
    the = ANIMAL - 1  # " the": the same tokens up to here on both branches
    row = _done(dog, the)
    page = _page(owner, zebra.conversation, f"?at={zebra.leaf_id}&open={row.id}")
    assert f'data-explanation-id="{row.id}"' in page
    assert {"open", "explained"} <= set(_token_classes(page, the).split())
