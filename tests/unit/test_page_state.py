"""Issue 15 items 3 and 4: the server owns the page's state. Its htmx answers carry the URL
(HX-Replace-Url, from the page's URL that htmx sends as HX-Current-URL), the chips whose tint or
outline changed and the panel's count (out-of-band swaps), the sections of another branch that
leave the panel, and the banner's sentence (HX-Trigger); forms without a script post and come back
to the page (303)."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.http import QueryDict
from django.urls import reverse

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, prefix_hashes, prefix_key
from nlaweb.explanations.models import Explanation
from nlaweb.thread.state import PageState
from tests.unit.test_branch_prefix import ANIMAL, _branches
from tests.unit.test_page import MEOW, _chat, _done

pytestmark = pytest.mark.django_db


def _htmx(persona, method: str, url: str, current: str, data: dict | None = None):
    """A request as htmx sends it from a page at `current`."""
    call = persona.client.post if method == "post" else persona.client.get
    return call(url, data or {}, HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=current)


def _page_url(conversation: Conversation, query: str = "") -> str:
    path = reverse("conversation", args=[conversation.id])
    return f"http://testserver{path}" + (f"?{query}" if query else "")


def _replaced_query(response) -> str:
    url = response.headers["HX-Replace-Url"]
    return url.split("?", 1)[1] if "?" in url else ""


def _oob_chip(html: str, prefix_hash: str) -> str:
    """The class of the out-of-band chip of that token prefix, or ""."""
    key = prefix_key(prefix_hash)
    found = re.search(
        rf'<span class="([^"]*)"[^>]*hx-swap-oob="outerHTML:.tok\[data-prefix=\'{key}\'\]"', html
    )
    return found.group(1) if found else ""


# -- the state's own rules --------------------------------------------------------------------------
def test_a_state_reads_its_url_and_writes_it_back_with_readable_commas():
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    leaf = str(uuid.uuid4())
    state = PageState.from_query(QueryDict(f"at={leaf}&open={a},junk,{a},{b}&tpl=1"))
    assert state == PageState(at=leaf, open=(a, b), tpl=True)
    assert state.query() == f"at={leaf}&open={a},{b}&tpl=1"
    assert state.closing([a]).adding([a]).open == (b, a)
    assert PageState.from_query(QueryDict("at=../../etc&tpl=yes")) == PageState()
    assert PageState().url("/c/x/") == "/c/x/"


# -- a click -----------------------------------------------------------------------------------------
def test_a_click_answers_with_the_url_its_chip_and_the_chip_it_closes(owner):
    owner_conversation = _conversation(owner)
    snapshot = _chat(owner_conversation)
    hashes = prefix_hashes(snapshot.token_ids)
    earlier = _done(snapshot, MEOW - 1, confidence="low")
    current = _page_url(owner_conversation, f"open={earlier.pk}&tpl=1")
    url = reverse("explain", args=[owner_conversation.id, snapshot.id])
    response = _htmx(owner, "post", url, current, {"position": MEOW})
    row = Explanation.objects.get(position=MEOW)
    assert _replaced_query(response) == f"at={snapshot.leaf_id}&open={row.pk}&tpl=1"
    html = response.content.decode()
    assert _oob_chip(html, hashes[MEOW]).split() == ["tok", "explained", "pending", "open"]
    # the token whose section the click replaced keeps its tint and loses its outline
    assert _oob_chip(html, hashes[MEOW - 1]).split() == ["tok", "explained", "low"]
    assert html.count('hx-swap-oob="outerHTML:.tok') == 2  # no other chip is sent
    assert "{#" not in html and "{%" not in html  # no template syntax shows on the page


def test_a_refreshed_section_brings_its_tint_and_the_panels_count(owner):
    conversation = _conversation(owner)
    snapshot = _chat(conversation)
    hashes = prefix_hashes(snapshot.token_ids)
    waiting = _done(snapshot, MEOW)
    Explanation.objects.filter(pk=waiting.pk).update(status="running", stage="verbalizing")
    done = _done(snapshot, MEOW - 1, confidence="medium")
    current = _page_url(conversation, f"open={waiting.pk},{done.pk}")
    panel = reverse("explanation_panel", args=[waiting.pk])
    html = _htmx(owner, "get", panel, current).content.decode()
    assert _oob_chip(html, hashes[MEOW]).split() == ["tok", "explained", "pending", "open"]
    assert re.search(r'id="batch-status"[^>]*hx-swap-oob="true">1 of 2 finished<', html)
    Explanation.objects.filter(pk=waiting.pk).update(status="done", stage="done", confidence="high")
    html = _htmx(owner, "get", panel, current).content.decode()
    assert _oob_chip(html, hashes[MEOW]).split() == ["tok", "explained", "high", "open"]
    assert re.search(r'hx-swap-oob="true">2 of 2 finished<', html)


def test_closing_a_section_drops_it_from_the_url_and_its_outline(owner):
    conversation = _conversation(owner)
    snapshot = _chat(conversation)
    hashes = prefix_hashes(snapshot.token_ids)
    one, two = _done(snapshot, MEOW), _done(snapshot, MEOW - 1)
    current = _page_url(conversation, f"at={snapshot.leaf_id}&open={one.pk},{two.pk}")
    close = reverse("close_explanations", args=[conversation.id]) + f"?ids={one.pk}"
    response = _htmx(owner, "get", close, current)
    assert _replaced_query(response) == f"at={snapshot.leaf_id}&open={two.pk}"
    html = response.content.decode()
    assert _oob_chip(html, hashes[MEOW]).split() == ["tok", "explained", "high"]
    assert _oob_chip(html, hashes[MEOW - 1]).split() == ["tok", "explained", "high", "open"]


def test_the_template_toggle_writes_tpl_in_the_url_and_nothing_else(owner):
    conversation = _conversation(owner)
    row = _done(_chat(conversation), MEOW)
    current = _page_url(conversation, f"open={row.pk}")
    toggle = reverse("page_state", args=[conversation.id])
    on = _htmx(owner, "get", toggle + "?tpl=1", current)
    assert (on.content, _replaced_query(on)) == (b"", f"open={row.pk}&tpl=1")
    off = _htmx(owner, "get", toggle, current + "&tpl=1")
    assert _replaced_query(off) == f"open={row.pk}"


# -- the thread changes --------------------------------------------------------------------------
def test_switching_branch_drops_the_other_branchs_section_from_panel_and_url(owner):
    zebra, dog = _branches(owner)
    conversation = zebra.conversation
    row = _done(dog, ANIMAL)
    shared = _done(dog, ANIMAL - 1)  # " the": the same prefix on both branches
    current = _page_url(conversation, f"at={dog.leaf_id}&open={row.pk},{shared.pk}")
    switch = reverse("switch_branch", args=[conversation.id])
    response = _htmx(owner, "post", switch, current, {"to": str(zebra.leaf_id)})
    assert _replaced_query(response) == f"at={zebra.leaf_id}&open={shared.pk}"
    html = response.content.decode()
    assert f"hx-swap-oob=\"delete:#panel > [data-explanation-id='{row.pk}']\"" in html
    assert f"[data-explanation-id='{shared.pk}']" not in html
    # the thread itself outlines the shared token, whose section stays
    key = prefix_key(shared.prefix_hash)
    assert re.search(rf'class="tok explained high open"[^>]*data-prefix="{key}"', html)


def test_a_link_naming_rows_the_branch_does_not_show_is_sent_to_the_one_it_shows(owner):
    zebra, dog = _branches(owner)
    row, shared = _done(dog, ANIMAL), _done(dog, ANIMAL - 1)
    page = reverse("conversation", args=[zebra.conversation_id])
    response = owner.client.get(f"{page}?at={zebra.leaf_id}&open={row.pk},{shared.pk}&tpl=1")
    assert response.status_code == 302
    assert response["Location"] == f"{page}?at={zebra.leaf_id}&open={shared.pk}&tpl=1"
    assert owner.client.get(response["Location"]).status_code == 200


# -- without a script ------------------------------------------------------------------------------
def test_a_plain_form_post_comes_back_to_the_page_showing_what_it_did(owner):
    conversation = _conversation(owner)
    snapshot = _chat(conversation)
    url = reverse("explain", args=[conversation.id, snapshot.id])
    response = owner.client.post(url, {"position": MEOW})
    row = Explanation.objects.get(position=MEOW)
    assert response.status_code == 303
    assert response["Location"].endswith(f"?at={snapshot.leaf_id}&open={row.pk}")
    page = owner.client.get(response["Location"]).content.decode()
    assert f'<section class="explanation queued" data-explanation-id="{row.pk}"' in page
    refused = owner.client.post(url, {"position": 400})
    assert refused.status_code == 400
    assert "Token position 400 is outside this conversation" in refused.content.decode()
    assert Explanation.objects.count() == 1


def test_a_plain_send_comes_back_to_the_page_with_the_message(owner):
    conversation = _conversation(owner)
    response = owner.client.post(reverse("send", args=[conversation.id]), {"content": "Hi there"})
    assert response.status_code == 303
    conversation.refresh_from_db()
    assert response["Location"].endswith(f"?at={conversation.head_id}")
    assert "Hi there" in owner.client.get(response["Location"]).content.decode()


# -- a refused request ----------------------------------------------------------------------------
def test_a_refused_htmx_request_names_its_sentence_for_the_banner(owner, settings):
    conversation = _conversation(owner)
    body = "content=caf\xe9".encode("latin-1")  # not UTF-8
    response = owner.client.generic(
        "POST",
        reverse("send", args=[conversation.id]),
        body,
        "application/x-www-form-urlencoded",
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    trigger = json.loads(response.headers["HX-Trigger"])["nlaweb:problem"]
    assert trigger["message"] == response.json()["error"] and trigger["reread"] is False


def _conversation(owner) -> Conversation:
    return start_conversation(owner.user)
