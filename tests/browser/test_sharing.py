"""Sharing in Debian's Chromium against the live stack: a finding shared with a pinned token and read
in a fresh browser without cookies, framed as an embed, revoked, copied into a reader's account; a
stranger's attempt at a private conversation and its websocket; export and import; a hostile
comment that stays text. Screenshots under var/test-artifacts/screens/ (share-*.png)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import Browser, BrowserContext, Page, expect

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation
from nlaweb.explanations.models import Explanation
from nlaweb.share.models import Share
from nlaweb.share.sharing import Pin, create_share
from tests.browser.pages import _conversation_id, _send, _start_conversation, screenshot
from tests.factories import snapshot_of
from tests.sharing import finished, normalized

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WORDS = ".tok:not(.tpl):not(.ws)"


@pytest.fixture
def fresh(page: Page) -> Iterator[Any]:
    """Opens pages in new browser contexts: no cookies, no storage, as another person's browser."""
    browser: Browser = page.context.browser
    contexts: list[BrowserContext] = []

    def open_page(width: int = 1400) -> Page:
        context = browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(context)
        other = context.new_page()
        other.set_default_timeout(60_000)
        return other

    yield open_page
    for context in contexts:
        context.close()


@contextmanager
def _site(html: str) -> Iterator[str]:
    """Another origin on this machine serving one page (a blog that embeds a link)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/post"
    finally:
        server.shutdown()
        server.server_close()


def _signed_in(page: Page, stack, user) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": stack.base_url}]
    )


def _stored_finding(user) -> tuple[Conversation, dict[int, Explanation]]:
    conversation = start_conversation(user)
    snapshot = snapshot_of(conversation)
    return conversation, {p: finished(snapshot, p) for p in (2, 8)}


def test_a_finding_shared_with_a_pinned_token_opens_in_a_fresh_browser_without_cookies(
    page: Page, stack, fresh
):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep on the warm windowsill")
    expect(page.locator("article.message.assistant .tok").first).to_be_attached()
    words = page.locator(f"article.message.user {WORDS}")
    pinned_word, other_word = words.nth(1).inner_text(), words.nth(3).inner_text()
    words.nth(1).click(modifiers=["Shift"])
    words.nth(3).click(modifiers=["Shift"])
    page.get_by_role("button", name="Explain 2 tokens").click()
    sections = page.locator("#panel .explanation")
    expect(sections).to_have_count(2)
    for i in range(2):
        expect(sections.nth(i)).to_have_attribute("data-status", "done")
    pinned_id = sections.nth(0).get_attribute("data-explanation-id")
    other_id = sections.nth(1).get_attribute("data-explanation-id")
    sections.nth(1).locator('[data-role="close-section"]').click()  # the one being read stays open

    # Share: the open explanation is offered as the pin; a comment; create the link.
    page.get_by_role("link", name="Share", exact=True).click()
    pinned = Explanation.objects.get(pk=pinned_id)
    expect(page.locator(f'input[name="pin"][value="{pinned.position}"]')).to_be_checked()
    page.get_by_label(re.compile("^Comment")).fill("The model already thinks of the cat here.")
    screenshot(page, "share-new")
    page.get_by_role("button", name="Create link").click()
    link = page.locator('[data-role="created-link"]').input_value()
    assert re.fullmatch(rf"{re.escape(stack.base_url)}/s/[A-Za-z0-9_-]{{22}}", link)
    screenshot(page, "share-list-created")

    # A stranger's browser, no cookies: the read-only page, the pin highlighted and open.
    reader = fresh()
    requests: list[str] = []
    reader.on("request", lambda r: requests.append(r.url) if "/explanations/" in r.url else None)
    reader.goto(link)
    expect(reader.locator('[data-role="comment"]')).to_have_text(
        "The model already thinks of the cat here."
    )
    token = reader.locator(".tok.pinned")
    expect(token).to_have_text(pinned_word)
    expect(token).to_have_class(re.compile(r"\bopen\b"))
    panel = reader.locator("#panel .explanation")
    expect(panel).to_have_attribute("data-explanation-id", pinned_id)
    assert " ".join(panel.locator('[data-role="text"]').inner_text().split()) == " ".join(
        pinned.text.split()
    )
    expect(reader.locator('[data-role="source"]')).to_contain_text("AV sha256:")
    expect(reader.locator("body")).not_to_have_attribute("data-ws", "open")
    assert reader.context.cookies() == [] or all(
        c["name"] == "csrftoken" for c in reader.context.cookies()
    )
    screenshot(reader, "share-page")

    # An unexplained word is no button and asks nothing; an explained one shows its stored panel.
    plain = reader.locator("#shared-thread .tok.ro:not(.explained):not(.tpl):not(.ws)").first
    assert plain.get_attribute("role") is None
    plain.click()
    with reader.expect_response(re.compile(r"/explanations/\d+$")):
        reader.locator("#shared-thread .tok.explained", has_text=other_word).first.click()
    expect(panel).to_have_attribute("data-explanation-id", other_id)
    assert len(requests) == 1 and requests[0].endswith(
        f"/explanations/{Explanation.objects.get(pk=other_id).position}"
    )
    expect(reader).to_have_url(re.compile(f"open={other_id}"))  # the answer's HX-Replace-Url
    reader.reload()
    expect(reader.locator("#panel .explanation")).to_have_attribute("data-explanation-id", other_id)
    narrow = fresh(800)
    narrow.goto(link)
    screenshot(narrow, "share-page-800")

    # The embed frames in another site (another origin); the page itself does not.
    host = fresh(1000)
    with _site(
        f'<h1>My post</h1><iframe id="embed" src="{link}/embed" width="900" height="620"></iframe>'
        f'<iframe id="page" src="{link}" width="400" height="200"></iframe>'
    ) as blog:
        host.goto(blog)
    embed = host.frame_locator("#embed")
    expect(embed.locator(".tok.pinned")).to_have_text(pinned_word)
    expect(embed.locator('[data-role="comment"]')).to_be_visible()
    expect(embed.locator("header.top")).to_have_count(0)
    # The page's frame was refused (X-Frame-Options DENY, frame-ancestors 'none'): the load event
    # that goto waited for came after both frames had finished, one of them as Chromium's error page.
    assert [f.url for f in host.frames if f.url.startswith("chrome-error://")], host.frames
    expect(host.frame_locator("#page").locator(".finding")).to_have_count(0)
    screenshot(host, "share-embed-in-a-page")
    direct = fresh(900)
    direct.goto(link + "/embed")
    screenshot(direct, "share-embed")
    assert Share.objects.get().views >= 4


def test_a_revoked_link_shows_a_sentence_and_its_embed_too(page: Page, stack, owner, fresh):
    conversation, _rows = _stored_finding(owner.user)
    share = create_share(conversation, Pin(2), "soon gone")
    _signed_in(page, stack, owner.user)
    page.goto(stack.base_url + "/shares/")
    expect(page.locator(f'[data-share-id="{share.id}"] [data-role="views"]')).to_have_text("0")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'[data-share-id="{share.id}"]').get_by_role("button", name="Revoke").click()
    expect(page.locator(f'[data-share-id="{share.id}"]')).to_contain_text("revoked")
    screenshot(page, "share-list-revoked")
    reader = fresh()
    for suffix in ("", "/embed"):
        response = reader.goto(f"{stack.base_url}/s/{share.id}{suffix}")
        assert response.status == 404
        expect(reader.locator('[data-role="revoked"]')).to_have_text(
            "This link was revoked by its owner."
        )
    screenshot(reader, "share-revoked-embed")
    page.goto(f"{stack.base_url}/c/{conversation.id}/")
    expect(page.locator("article.message")).to_have_count(2)  # revoking never deletes anything


def test_a_stranger_cannot_read_a_private_conversation_or_its_websocket(page: Page, stack, fresh):
    _start_conversation(page, stack)
    _send(page, "A secret about my cat")
    expect(page.locator("article.message.assistant .tok").first).to_be_attached()
    conversation_id = _conversation_id(page)
    ws_path = f"/ws/conversations/{conversation_id}/"
    anonymous = fresh()
    guest = fresh()
    _start_conversation(guest, stack)  # another visitor with a guest account of their own
    for stranger in (anonymous, guest):
        response = stranger.goto(f"{stack.base_url}/c/{conversation_id}/")
        assert response.status == 404  # (the stack runs with DEBUG=1: Django's 404 page)
        expect(stranger.locator("body")).not_to_contain_text("secret")
        outcome = stranger.evaluate(
            """(path) => new Promise((resolve) => {
                 const ws = new WebSocket(`ws://${location.host}${path}`);
                 let opened = false;
                 ws.onopen = () => { opened = true; };
                 ws.onclose = (event) => resolve({ opened, code: event.code });
               })""",
            ws_path,
        )
        assert outcome == {"opened": False, "code": 1006}, outcome  # refused in the handshake
    screenshot(guest, "share-stranger-404")
    opened = page.evaluate(
        """(path) => new Promise((resolve) => {
             const ws = new WebSocket(`ws://${location.host}${path}`);
             ws.onopen = () => { ws.close(); resolve(true); };
             ws.onclose = () => resolve(false);
           })""",
        ws_path,
    )
    assert opened  # the owner's own socket opens


def test_a_reader_copies_a_shared_conversation_into_their_own_and_goes_on(
    page: Page, stack, owner, fresh
):
    conversation, _rows = _stored_finding(owner.user)
    share = create_share(conversation, Pin(8), "")
    reader = fresh()
    reader.goto(f"{stack.base_url}/s/{share.id}")
    reader.get_by_role("button", name="Copy to my conversations").click()
    expect(reader).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/"))
    expect(reader.locator("body")).to_have_attribute("data-ws", "open")
    copy = Conversation.objects.get(pk=_conversation_id(reader))
    assert copy.owner.username.startswith("guest-") and copy.pk != conversation.pk
    expect(reader.locator("article.message")).to_have_count(2)
    expect(reader.locator("article.message .tok.explained")).to_have_count(2)
    expect(reader.locator(".account")).to_contain_text("guest")
    screenshot(reader, "share-copied")
    assert conversation.messages.count() == 2 and Share.objects.get().views == 1


def test_export_then_import_in_the_browser_gives_the_same_conversation(page: Page, stack, tmp_path):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    expect(page.locator("article.message.assistant .tok").first).to_be_attached()
    page.locator(f"article.message.user {WORDS}").nth(1).click()
    expect(page.locator("#panel .explanation")).to_have_attribute("data-status", "done")
    with page.expect_download() as exported:
        page.get_by_role("link", name="Export", exact=True).click()
    first = tmp_path / exported.value.suggested_filename
    exported.value.save_as(first)
    assert first.name == "nlaweb-my-cat-loves-to-sleep.json"

    original = _conversation_id(page)
    page.get_by_role("link", name="Import", exact=True).click()
    page.get_by_label("Exported file (.json)").set_input_files(str(first))
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/c/(?!{original})[0-9a-f-]{{36}}/"))
    expect(page.locator("article.message.user")).to_contain_text("My cat loves to sleep")
    expect(page.locator("article.message .tok.explained")).to_have_count(1)
    with page.expect_download() as again:
        page.get_by_role("link", name="Export", exact=True).click()
    second = tmp_path / "second.json"
    again.value.save_as(second)
    assert normalized(json.loads(second.read_text())) == normalized(json.loads(first.read_text()))

    # A file cut short is refused with its sentence, and nothing is added.
    count = Conversation.objects.count()
    cut = tmp_path / "cut.json"
    cut.write_bytes(first.read_bytes()[:200])
    page.get_by_role("link", name="Import", exact=True).click()
    page.get_by_label("Exported file (.json)").set_input_files(str(cut))
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("This file stops in the middle of its JSON")
    screenshot(page, "share-import-truncated")
    assert Conversation.objects.count() == count


def test_a_comment_with_a_script_tag_renders_as_text(page: Page, stack, owner, fresh):
    conversation, _rows = _stored_finding(owner.user)
    _signed_in(page, stack, owner.user)
    page.goto(f"{stack.base_url}/c/{conversation.id}/share")
    page.locator('input[name="pin"][value="2"]').check()
    comment = "<script>alert(1)</script>"
    page.get_by_label(re.compile("^Comment")).fill(comment)
    page.get_by_role("button", name="Create link").click()
    link = page.locator('[data-role="created-link"]').input_value()
    reader = fresh()
    dialogs: list[str] = []
    reader.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for url in (link, link + "/embed"):
        reader.goto(url)
        expect(reader.locator('[data-role="comment"]')).to_have_text(comment)
        reader.wait_for_load_state("load")
    page.goto(stack.base_url + "/shares/")
    expect(page.locator(".comment-cell").first).to_have_text(comment)
    assert dialogs == []
    screenshot(reader, "share-script-comment")


def test_a_guest_signs_up_from_the_header_and_keeps_their_conversation(page: Page, stack):
    _start_conversation(page, stack)
    conversation_id = _conversation_id(page)
    expect(page.locator(".account")).to_contain_text("guest")
    page.get_by_role("link", name="Sign up", exact=True).click()
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password", exact=True).fill("violet-harbour-71")
    page.get_by_label("Password confirmation").fill("violet-harbour-71")
    screenshot(page, "account-signup")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".account .user")).to_have_text("ada")
    expect(page.locator(f'a[href="/c/{conversation_id}/"]')).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    expect(page.locator(f'a[href="/c/{conversation_id}/"]')).to_have_count(0)
    page.get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill("violet-harbour-71")
    screenshot(page, "account-login")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(f'a[href="/c/{conversation_id}/"]')).to_be_visible()
