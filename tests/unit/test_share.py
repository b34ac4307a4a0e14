"""Share links: made from what the owner's page shows, frozen from then on, read by anyone with the
link (no GPU work, only stored rows), embedded, copied into a reader's account, and revoked."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from nlaweb.chat.conversation import send_message
from nlaweb.chat.models import Conversation, Message, Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.share.models import COMMENT_MAX_CHARS, SHARE_ID_BYTES, Share
from nlaweb.share.revisions import source_revisions
from nlaweb.share.sharing import Pin, ShareRejected, create_share, revoke_share
from nlaweb.sources.configured import get_source
from tests.factories import snapshot_of
from tests.sharing import explained_conversation, finished, local_source  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("local_source")]

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="[^"]+"|"X-CSRFToken": "[^"]+"')


def _html(response) -> str:
    """The page without its per-request CSRF tokens, to compare two renders."""
    return CSRF.sub("", response.content.decode())


def test_a_share_id_is_128_random_bits_in_a_short_url(owner):
    found = explained_conversation(owner.user)
    ids = {create_share(found.conversation, None, "").id for _ in range(20)}
    assert len(ids) == 20 and SHARE_ID_BYTES * 8 >= 128
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)
    assert reverse("share_view", args=[ids.pop()]).count("/") == 2  # /s/<id>


def test_the_owner_shares_the_page_with_a_pinned_paragraph_and_a_comment(owner):
    found = explained_conversation(owner.user)
    url = reverse("share_new", args=[found.conversation.id])
    form = owner.client.get(url, {"open": str(found.explanations[8].id)})
    assert 'value="8" checked' in form.content.decode()  # what was open is offered as the pin
    response = owner.client.post(url, {"pin": "8:1", "comment": "Look at this token."})
    share = Share.objects.get()
    assert response.url == f"{reverse('shares')}?created={share.id}"
    assert (share.pinned_position, share.pinned_paragraph) == (8, 1)
    assert share.snapshot == found.snapshot and share.comment == "Look at this token."
    assert set(share.explanations.all()) == set(found.explanations.values())
    listing = owner.client.get(response.url).content.decode()
    assert f"http://testserver/s/{share.id}" in listing and "Copy link" in listing
    assert f"/s/{share.id}/embed" in listing


@pytest.mark.parametrize(
    ("pin", "sentence"),
    [
        (
            Pin(5),
            "Token #5 has no finished explanation to pin: explain it first, or pick another token.",
        ),
        (Pin(2, 4), "The explanation of token #2 has 2 paragraphs; paragraph 5 does not exist."),
    ],
)
def test_a_pin_without_a_finished_explanation_is_refused_with_a_sentence(owner, pin, sentence):
    found = explained_conversation(owner.user)
    finished(found.snapshot, 5, status=Explanation.Status.FAILED)
    with pytest.raises(ShareRejected, match=re.escape(sentence)):
        create_share(found.conversation, pin, "")
    assert Share.objects.count() == 0


def test_the_form_refuses_a_long_comment_and_an_unknown_pin_with_sentences(owner):
    found = explained_conversation(owner.user)
    url = reverse("share_new", args=[found.conversation.id])
    long = owner.client.post(url, {"pin": "", "comment": "x" * (COMMENT_MAX_CHARS + 1)})
    assert long.status_code == 400
    assert (
        f"at most {COMMENT_MAX_CHARS} characters; it has {COMMENT_MAX_CHARS + 1}"
        in long.content.decode()
    )
    unknown = owner.client.post(url, {"pin": "5", "comment": ""})
    assert "That token has no finished explanation to pin" in unknown.content.decode()
    assert Share.objects.count() == 0


def test_an_empty_conversation_cannot_be_shared(owner):
    found = explained_conversation(owner.user)
    empty = Conversation.objects.create(owner=owner.user, source_id=found.conversation.source_id)
    page = owner.client.get(reverse("share_new", args=[empty.id])).content.decode()
    assert "Send a message first: there is nothing to share yet." in page
    with pytest.raises(ShareRejected, match="Send a message first"):
        create_share(empty, None, "")


def test_later_messages_explanations_and_edits_never_change_what_the_link_shows(owner):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, Pin(2, 0), "frozen")
    url = reverse("share_view", args=[share.id])
    before = _html(Client().get(url))
    # After the link: another token explained, a failed one retried, a new turn, a retitle.
    finished(found.snapshot, 4)
    send_message(found.conversation, "And dogs?")
    Conversation.objects.filter(pk=found.conversation.pk).update(title="Renamed")
    later = snapshot_of(found.conversation, [("user", "Hi", 3), ("assistant", "Yo", 3)])
    finished(later, 1)
    assert _html(Client().get(url)) == before
    assert share.explanations.count() == 2


def test_a_reader_sees_the_snapshot_the_pin_the_comment_and_the_source_revisions(owner):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, Pin(8, 1), "Look <b>here</b>")
    reader = Client()
    page = reader.get(reverse("share_view", args=[share.id])).content.decode()
    revisions = source_revisions(get_source(found.snapshot.source_id))
    assert revisions["av"].startswith("sha256:")
    for value in revisions.values():
        assert value in page
    assert "Tiny local · layer 1" in page
    assert "Look &lt;b&gt;here&lt;/b&gt;" in page and "<b>here</b>" not in page
    assert 'data-role="pinned-paragraph">Sleep and warmth nearby.</p>' in page
    # The pinned token is highlighted and its explanation open in the panel.
    assert re.search(
        r'class="tok ro pinned[^"]*explained high[^"]* open"[^>]*\sdata-position="8"', page
    )
    assert f'data-explanation-id="{found.explanations[8].id}"' in page
    # The pinned paragraph stands out in the panel (styled.js marks paragraph 1 of that explanation).
    pinned = f'<meta name="nlaweb-pinned-paragraph" content="{found.explanations[8].id}:1">'
    assert pinned in page
    # No door to GPU work: no explain form, and only explained tokens are buttons.
    assert "/explain" not in page and "token-form" not in page
    assert "/compare" not in page and "/cancel" not in page  # the owner's panel actions
    buttons = re.findall(
        r'class="tok ro[^"]*"\s+role="button" tabindex="0"\s+data-position="(\d+)"', page
    )
    assert sorted(map(int, buttons)) == [2, 8]
    assert "Copy to my conversations" in page


def test_a_reader_clicks_an_explained_token_and_only_stored_rows_answer(
    owner, django_capture_on_commit_callbacks
):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, None, "")
    reader = Client()
    with django_capture_on_commit_callbacks() as callbacks:
        panel = reader.get(reverse("share_panel", args=[share.id, 2]))
        unexplained = reader.get(reverse("share_panel", args=[share.id, 3]))
        outside = reader.get(reverse("share_panel", args=[share.id, 999]))
    assert panel.status_code == 200
    assert f'data-explanation-id="{found.explanations[2].id}"' in panel.content.decode()
    assert "A cat, the pet." in panel.content.decode()
    assert "/compare" not in panel.content.decode()
    assert (unexplained.status_code, outside.status_code) == (404, 404)
    assert callbacks == [] and Explanation.objects.count() == 2  # no job, no new row


def test_an_explanation_made_after_the_link_is_not_served_by_it(owner):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, None, "")
    finished(found.snapshot, 4)
    assert Client().get(reverse("share_panel", args=[share.id, 4])).status_code == 404


def test_a_revoked_link_answers_404_with_a_sentence_and_the_conversation_stays(owner):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, Pin(2), "")
    response = owner.client.post(reverse("share_revoke", args=[share.id]))
    assert response.url == reverse("shares")
    for name in ("share_view", "share_embed"):
        gone = Client().get(reverse(name, args=[share.id]))
        assert gone.status_code == 404
        assert "This link was revoked by its owner." in gone.content.decode()
    stranger_page = Client().get(reverse("share_view", args=[share.id])).content.decode()
    assert "Back to your conversations" not in stranger_page
    assert "Start a conversation of your own" in stranger_page
    owner_page = owner.client.get(reverse("share_view", args=[share.id])).content.decode()
    assert "Back to your conversations" in owner_page
    assert Client().get(reverse("share_panel", args=[share.id, 2])).status_code == 404
    assert Client().post(reverse("share_copy", args=[share.id])).status_code == 404
    assert Conversation.objects.filter(pk=found.conversation.pk).exists()
    assert Explanation.objects.count() == 2
    listing = owner.client.get(reverse("shares")).content.decode()
    assert "revoked" in listing


def test_an_unknown_link_is_the_apps_404_without_the_revoked_sentence():
    response = Client().get(reverse("share_view", args=["A" * 22]))
    assert response.status_code == 404
    assert "revoked" not in response.content.decode()


def test_the_owner_lists_their_links_with_pins_comments_and_view_counts(owner, stranger):
    found = explained_conversation(owner.user)
    pinned = create_share(found.conversation, Pin(8, 0), "first")
    plain = create_share(found.conversation, None, "second")
    for _ in range(3):
        Client().get(reverse("share_view", args=[pinned.id]))
    Client().get(reverse("share_embed", args=[pinned.id]))
    revoke_share(plain)
    page = owner.client.get(reverse("shares")).content.decode()
    row = re.search(rf'<tr class="" data-share-id="{pinned.id}">(.*?)</tr>', page, re.S).group(1)
    assert "t108" in row and "#8 · paragraph 1" in row and "first" in row
    assert '<td class="num" data-role="views">4</td>' in row
    assert re.search(rf'<tr class="revoked" data-share-id="{plain.id}">', page)
    assert pinned.id not in stranger.client.get(reverse("shares")).content.decode()


def test_copy_to_my_conversations_forks_the_branch_into_a_new_guest(owner):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, Pin(2), "")
    send_message(found.conversation, "later, not shared")
    reader = Client()
    response = reader.post(reverse("share_copy", args=[share.id]))
    copy = Conversation.objects.exclude(pk=found.conversation.pk).get()
    assert response.url == reverse("conversation", args=[copy.id])
    assert copy.owner.username.startswith("guest-") and copy.owner != owner.user
    assert [(m.role, m.content) for m in copy.path()] == [
        ("user", "My cat"),
        ("assistant", "Cats nap."),
    ]
    snapshot = Snapshot.objects.get(conversation=copy)
    assert snapshot.token_ids == found.snapshot.token_ids and snapshot.leaf == copy.head
    rows = Explanation.objects.filter(snapshot=snapshot).order_by("position")
    assert [(e.position, e.text, e.relative_mse) for e in rows] == [
        (p, e.text, e.relative_mse) for p, e in sorted(found.explanations.items())
    ]
    page = reader.get(response.url).content.decode()
    assert "explained high" in page  # the copy's page tints what the share had explained
    assert found.conversation.messages.count() == 4  # the original is untouched


def test_the_embed_may_be_framed_by_any_site_and_nothing_else_may(owner):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, Pin(2), "embedded")
    embed = Client().get(reverse("share_embed", args=[share.id]))
    assert embed.status_code == 200
    assert "X-Frame-Options" not in embed.headers
    assert "frame-ancestors *" in embed.headers["Content-Security-Policy"].split("; ")
    assert 'class="top"' not in embed.content.decode()  # no site chrome
    assert "embedded" in embed.content.decode()
    for url in (reverse("share_view", args=[share.id]), reverse("home"), reverse("shares")):
        response = Client().get(url)
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"].split("; ")


def test_link_previews_get_open_graph_tags_with_the_comment_escaped(owner):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, Pin(8), 'He said "<script>"')
    page = Client().get(reverse("share_view", args=[share.id])).content.decode()
    assert '<meta property="og:description" content="He said &quot;&lt;script&gt;&quot;">' in page
    assert f'<meta property="og:url" content="http://testserver/s/{share.id}">' in page
    assert '<meta property="og:title" content="My cat · “t108”">' in page
    assert '<meta name="robots" content="noindex">' in page


def test_a_share_and_a_copy_make_no_account_for_a_mere_reader(owner):
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, None, "")
    before = type(owner.user).objects.count()
    reader = Client()
    for name in ("share_view", "share_embed"):
        reader.get(reverse(name, args=[share.id]))
    reader.get(reverse("share_panel", args=[share.id, 2]))
    for name in ("import_conversation", "shares"):
        assert reader.get(reverse(name)).status_code == 200
    assert type(owner.user).objects.count() == before


def test_the_conversation_page_offers_share_and_export(owner):
    found = explained_conversation(owner.user)
    page = owner.client.get(reverse("conversation", args=[found.conversation.id])).content.decode()
    assert f'href="{reverse("share_new", args=[found.conversation.id])}"' in page
    assert f'href="{reverse("export", args=[found.conversation.id])}"' in page
    assert Message.objects.count() == 2


def test_the_link_shows_the_branch_the_owners_page_showed(owner):
    found = explained_conversation(owner.user)
    first_reply = found.snapshot.leaf
    # An edit of the first message makes another branch, and the head moves to it.
    other = snapshot_of(
        found.conversation, [("user", "My dog", 6), ("assistant", "Dogs run.", 6)], first_token=500
    )
    finished(other, 3)
    assert found.conversation.head == other.leaf
    url = reverse("share_new", args=[found.conversation.id])
    form = owner.client.get(url, {"at": str(first_reply.id)}).content.decode()
    assert f'name="at" value="{first_reply.id}"' in form
    owner.client.post(url, {"at": str(first_reply.id), "pin": "8", "comment": ""})
    owner.client.post(url, {"pin": "3", "comment": ""})
    on_first, on_head = Share.objects.order_by("created_at")
    assert (on_first.snapshot, on_first.pinned_position) == (found.snapshot, 8)
    assert (on_head.snapshot, on_head.pinned_position) == (other, 3)
    page = Client().get(reverse("share_view", args=[on_first.id])).content.decode()
    assert "t100" in page and "t500" not in page
    assert 'class="branches"' not in page and "Edit</button>" not in page  # read-only, one branch
