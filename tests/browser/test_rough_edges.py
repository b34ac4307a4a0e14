"""Issue 14 items 4-6 in Chromium against the live stack: the API docs render with every outside
request blocked, a message's explanations as a sortable table linked to its tokens, actions
readable without hover, the API keys page's Copy button, and a revoked link as a stranger sees it.
Every state is saved as a screenshot under var/test-artifacts/screens/."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Page, expect

from nlaweb.chat.models import Conversation
from nlaweb.middleware.form_body import NOT_UTF8
from nlaweb.share.sharing import create_share, revoke_share
from tests.browser.pages import _conversation_id, _send, _start_conversation, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WORDS = ".tok:not(.tpl):not(.ws)"


def _explain(page: Page, token) -> None:
    with page.expect_response(re.compile(r"/explain$")):
        token.click()
    section = page.locator("#panel .explanation").first
    expect(section).to_have_attribute("data-position", token.get_attribute("data-position"))
    expect(section).to_have_attribute("data-status", "done")


def test_the_api_docs_render_with_every_outside_request_blocked(page: Page, stack):
    outside: list[str] = []

    def only_loopback(route):
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", only_loopback)
    page.goto(stack.base_url + "/api/v1/docs")
    # Swagger UI drew the operations (it breaks paths with zero-width spaces: match data-path).
    expect(page.locator('.opblock-summary-path[data-path="/api/v1/sources"]')).to_be_visible()
    assert page.locator(".opblock").count() >= 5  # sources, explain, completion, vector, score
    screenshot(page, "api-docs-offline")
    assert outside == []


def test_a_messages_explanations_read_as_a_sortable_table_linked_to_its_tokens(page: Page, stack):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    expect(page.locator("#thread")).to_have_attribute("data-generating", "")
    # An empty thread reads "not generating" too: wait for the reply's own tokens.
    expect(page.locator("article.message.assistant .tok").first).to_be_attached()
    user = page.locator("article.message.user")
    words = user.locator(WORDS)
    expect(words.first).to_be_visible()

    # The actions read without hover: full opacity, the accent colour (contrast ≥ 4.5 on white).
    edit = user.get_by_role("button", name="Edit")
    page.mouse.move(0, 0)
    assert edit.evaluate("b => getComputedStyle(b.closest('.actions')).opacity") == "1"
    assert edit.evaluate("b => getComputedStyle(b).color") == "rgb(59, 91, 219)"

    picks = [words.nth(0), words.nth(words.count() - 1)]
    for token in picks:
        _explain(page, token)
    positions = [int(t.get_attribute("data-position")) for t in picks]
    user.get_by_role("button", name="Table").click()
    table = user.locator(".explanations-table")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(2)
    assert [int(rows.nth(i).get_attribute("data-position")) for i in range(2)] == positions
    for i in range(2):
        expect(rows.nth(i).locator("td").nth(3)).to_have_text(re.compile(r"^-?\d+\.\d\d$"))
    screenshot(page, "message-table")

    table.get_by_role("button", name="#").click()  # sorted ascending already: now descending
    expect(table.locator("th").first).to_have_attribute("aria-sort", "descending")
    assert int(rows.first.get_attribute("data-position")) == positions[1]

    # A row opens its token's explanation in the panel, and the token is outlined.
    with page.expect_response(re.compile(r"/explain$")):
        rows.nth(1).click()  # the first pick, after the sort
    expect(page.locator("#panel .explanation")).to_have_attribute(
        "data-position", str(positions[0])
    )
    expect(picks[0]).to_have_class(re.compile(r"\bopen\b"))
    expect(rows.nth(1)).to_have_class(re.compile(r"\bcurrent\b"))
    screenshot(page, "message-table-row-opened")

    with page.expect_download() as download:
        user.get_by_role("link", name="CSV").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("position,token,explanation,relative_mse")
    assert len(lines) == 3

    user.get_by_role("button", name="Hide").click()
    expect(table).to_have_count(0)


def test_the_api_keys_page_has_a_copy_button_and_a_revoked_link_sends_a_stranger_nowhere(
    page: Page, stack
):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    expect(page.locator("#thread")).to_have_attribute("data-generating", "")
    # An empty thread reads "not generating" too: wait for the reply's own tokens.
    expect(page.locator("article.message.assistant .tok").first).to_be_attached()
    conversation = Conversation.objects.get(pk=_conversation_id(page))

    page.goto(stack.base_url + "/account/api-keys")
    page.get_by_label("Name").fill("notebook")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("the new API key")
    expect(key).to_have_value(re.compile(r"^nla_"))
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    screenshot(page, "api-keys-new-key")

    share = create_share(conversation, None, "")
    revoke_share(share)
    stranger = page.context.browser.new_page()
    stranger.goto(f"{stack.base_url}/s/{share.id}")
    expect(stranger.get_by_text("This link was revoked by its owner.")).to_be_visible()
    expect(stranger.get_by_role("link", name="Back to your conversations")).to_have_count(0)
    expect(stranger.get_by_role("link", name="Start a conversation of your own")).to_be_visible()
    screenshot(stranger, "revoked-link-stranger")
    stranger.close()


def test_a_refused_request_shows_the_servers_sentence_in_the_banner_and_keeps_the_page(
    page: Page, stack
):
    """The server words the refusal (HX-Trigger nlaweb:problem); the page shows it as it is. The
    browser sends real bytes that are not UTF-8 (the request's body is rewritten on its way)."""
    # The test stack runs with DEBUG=1, where django-htmx's debug script shows a 400 answer as the
    # whole page; production (DEBUG off) has no such script. Stop its event, as production would.
    page.add_init_script(
        'window.addEventListener("htmx:beforeOnLoad", (e) => {'
        " if (e.detail.xhr.status === 400) e.stopPropagation(); }, true);"
    )
    _start_conversation(page, stack)

    def latin1(route):
        body = route.request.post_data_buffer or b""
        rewritten = re.sub(rb"Hello(\+|%20)there", b"caf%E9", body)
        assert rewritten != body, body  # the text was found and rewritten
        return route.continue_(post_data=rewritten)

    page.route(re.compile(r"/send$"), latin1)
    page.locator("#composer textarea").fill("Hello there")
    with page.expect_response(re.compile(r"/send$")) as answered:
        page.get_by_role("button", name="Send").click()
    assert answered.value.status == 400
    banner = page.locator("#problem")
    expect(banner).to_have_text(NOT_UTF8)
    expect(banner).to_have_attribute("role", "alert")
    screenshot(page, "refused-not-utf8")
    assert not Conversation.objects.get(pk=_conversation_id(page)).messages.exists()
    page.unroute(re.compile(r"/send$"))
    _send(page, "Hello there")  # the next request that succeeds takes the banner away
    expect(page.locator("article.message.user")).to_contain_text("Hello there")
    expect(banner).to_have_count(0)
