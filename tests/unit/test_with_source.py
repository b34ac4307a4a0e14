"""Explain with… another NLA of the same target (issue 17 item 4): which sources may read a token,
the other source's row, and the side-by-side view that the panel shows and a link restores."""

from __future__ import annotations

import pytest
from django.urls import reverse

from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations import with_source
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected
from tests.factories import snapshot_of
from tests.sharing import finished
from tests.source_files import three_sources  # noqa: F401
from workers.source_config import DEMO_LAYERS, load_sources

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("three_sources")]


@pytest.fixture
def row(owner) -> Explanation:
    conversation = start_conversation(owner.user)
    return finished(snapshot_of(conversation), 8, text="Near text.")


def test_only_sources_of_the_same_target_are_offered():
    assert [s.id for s in with_source.other_sources("near")] == ["far"]
    assert [s.id for s in with_source.other_sources("far")] == ["near"]
    assert with_source.other_sources("other-model") == []
    assert with_source.other_sources("nobody") == []


def test_a_source_of_another_target_is_refused_with_a_sentence(row, tmp_path):
    with pytest.raises(ExplainRejected) as refused:
        with_source.explain_with(row, "other-model")
    assert str(refused.value) == (
        f"'other-model' reads another target model ({tmp_path}/another-target) than 'near' "
        f"({tmp_path}/target): its tokens and activations are not this conversation's, so it "
        "cannot explain this token."
    )
    assert Explanation.objects.count() == 1


def test_an_unknown_or_the_same_source_is_refused_with_a_sentence(row):
    with pytest.raises(ExplainRejected, match="There is no NLA source 'ghost'; the configured"):
        with_source.explain_with(row, "ghost")
    with pytest.raises(ExplainRejected, match="already by 'near'; pick another source"):
        with_source.explain_with(row, "near")
    assert Explanation.objects.count() == 1


def test_the_other_source_gets_its_own_row_of_the_same_token_once(
    row, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as sent:
        theirs = with_source.explain_with(row, "far")
    assert (theirs.snapshot_id, theirs.position) == (row.snapshot_id, row.position)
    assert (theirs.source_id, theirs.status, theirs.settings_key) == (
        "far",
        "queued",
        row.settings_key,
    )
    assert theirs.prefix_hash == row.prefix_hash
    assert len(sent) == 1
    with django_capture_on_commit_callbacks(execute=True) as again:
        assert with_source.explain_with(row, "far").pk == theirs.pk
    assert again == []


def test_a_link_puts_other_sources_rows_of_an_open_token_beside_its_section(row):
    mine_other = finished(row.snapshot, 2)
    far = Explanation.objects.create(
        snapshot=row.snapshot, position=8, source_id="far", settings_key=row.settings_key
    )
    sections, beside = with_source.split_open([row, mine_other, far])
    assert sections == [row, mine_other]
    assert beside == {row.pk: [far]}
    # Only the first row of a token is its section; the same source twice is never a column.
    assert with_source.split_open([far, row]) == ([far], {far.pk: [row]})


def test_the_sources_list_offers_only_the_same_target(owner, row):
    page = owner.client.get(reverse("explain_with_sources", args=[row.id])).content.decode()
    assert 'data-source="far"' in page and "Tiny far" in page
    assert "other-model" not in page and 'data-source="near"' not in page


def test_explaining_with_shows_both_sources_side_by_side(owner, row):
    answer = owner.client.post(reverse("explain_with", args=[row.id]), {"source": "far"})
    page = answer.content.decode()
    theirs = Explanation.objects.get(source_id="far")
    assert 'class="compare side-by-side by-source"' in page
    assert "Near text." in page and f'data-explanation-id="{theirs.id}"' in page
    # Each column names its source and its layer (here the sources file's, else the AR sidecar's).
    assert "<strong>Tiny near</strong> · layer 2" in page
    assert "<strong>Tiny far</strong> · layer 1" in page


def test_explaining_with_another_target_answers_the_sentence(owner, row):
    answer = owner.client.post(reverse("explain_with", args=[row.id]), {"source": "other-model"})
    assert "reads another target model" in answer.content.decode()
    assert not Explanation.objects.filter(source_id="other-model").exists()


def test_a_reload_of_the_link_restores_the_side_by_side_view(owner, row):
    theirs = Explanation.objects.create(
        snapshot=row.snapshot, position=8, source_id="far", settings_key=row.settings_key,
        status="done", text="Far text.", relative_mse=0.61, fve=0.39, cosine=0.7, confidence="low",
    )  # fmt: skip
    url = reverse("conversation", args=[row.snapshot.conversation_id])
    page = owner.client.get(f"{url}?open={row.id},{theirs.id}").content.decode()
    assert page.count('class="compare side-by-side by-source"') == 1
    near_at, far_at = page.index("Near text."), page.index("Far text.")
    side_at = page.index("by-source")
    assert near_at < side_at < far_at  # the other source's column sits inside the section
    assert page.count(f'data-explanation-id="{theirs.id}"') == 1  # not a section of its own


def test_the_embedded_mode_serves_every_demo_block(tmp_path):
    sources = load_sources(None, tmp_path)
    assert [s.id for s in sources] == [f"smollm2-demo-l{k}" for k in DEMO_LAYERS]
    assert len({s.target for s in sources}) == 1 and len({s.av for s in sources}) == 2
    assert [s.id for s in with_source.other_sources(sources[0].id, sources)] == [sources[1].id]
