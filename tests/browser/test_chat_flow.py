"""A person's path through the app in Debian's Chromium, driven by Playwright, against the live stack."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page(stack) -> Iterator[Page]:
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def test_a_person_sends_a_message_clicks_a_token_and_reads_its_explanation(page: Page, stack):
    page.goto(stack.base_url + "/")
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("body")).to_have_attribute("data-ws", "open")
    page.get_by_placeholder("Message the model…").fill("My cat loves to sleep")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("article.message.user")).to_contain_text("My cat loves to sleep")
    # When the reply is done the thread is re-rendered with token chips for every message.
    chips = page.locator("article.message.assistant .tok")
    expect(chips.first).to_be_visible()
    user_chips = page.locator("article.message.user .tok")
    user_chips.last.click()
    panel = page.locator("#panel .explanation")
    expect(panel).to_have_attribute("data-status", "done")
    expect(panel.locator('[data-role="relative-mse"], .score dd').first).to_be_visible()
    expect(panel.locator(".score")).to_contain_text("cosine")
    expect(panel.locator('[data-role="text"]')).to_be_visible()
    # Reloading shows the same stored explanation: a second click is a lookup.
    page.reload()
    page.locator("article.message.user .tok").last.click()
    expect(page.locator("#panel .explanation")).to_have_attribute("data-status", "done")


def test_an_empty_message_shows_a_sentence_in_the_page(page: Page, stack):
    page.goto(stack.base_url + "/")
    page.get_by_role("button", name="New conversation").click()
    page.get_by_placeholder("Message the model…").fill("   ")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile("empty message cannot be sent"))
    expect(page.locator("article.message")).to_have_count(0)
