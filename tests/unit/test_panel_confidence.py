"""Issue 14.2 in the panel: the place on the source's scale, the sentence where pill and specificity
disagree, and the generic flag, as stored on the rows (so a permalink shows the same)."""

from __future__ import annotations

import pytest

from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations.models import Explanation
from tests.unit.test_page import LEAD, _chat, _done, _page

pytestmark = pytest.mark.django_db

WORDS = range(len(LEAD) + 3, len(LEAD) + 8)  # "My", " cat", " says", " me", "ow"


def _row(snapshot, position: int, text: str, **fields) -> Explanation:
    row = _done(snapshot, position, **fields)
    Explanation.objects.filter(pk=row.pk).update(text=text)
    return row


def test_the_panel_shows_the_place_the_sentence_and_the_generic_flag(owner):
    conversation = start_conversation(owner.user)
    snapshot = _chat(conversation)
    rows = [
        _row(
            snapshot,
            p,
            "Samsung is a Chinese company." if i < 3 else f"Word {i}.",
            confidence="low",
            specificity=0.97,
            calibration="shuffled",
            confidence_note="More specific than 97% of the reference explanations, yet low: …",
        )
        for i, p in enumerate(WORDS)
    ]
    page = _page(owner, conversation, f"?open={rows[0].id},{rows[4].id}")
    assert "rebuilt no closer than a shuffled explanation" in page
    assert page.count('data-role="confidence-note"') == 2
    assert "More specific than 97% of the reference explanations, yet low" in page
    assert page.count('data-role="generic"') == 1  # rows[4]'s text is its own
    assert "Generic: this text explains 3 of the 5 explained tokens of this message" in page


def test_two_repeats_are_not_generic_and_old_rows_show_no_place(owner):
    conversation = start_conversation(owner.user)
    snapshot = _chat(conversation)
    rows = [_row(snapshot, p, "A cat." if i < 2 else f"W{i}") for i, p in enumerate(WORDS)]
    page = _page(owner, conversation, f"?open={rows[0].id}")
    assert 'data-role="generic"' not in page
    assert 'data-role="calibration"' not in page and 'data-role="confidence-note"' not in page
