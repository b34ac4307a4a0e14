"""The page as a reader uses it (issue 7), in Debian's Chromium against the live stack: a batch's
sections each finish on their own frame, the URL brings the panel back after a reload, explained
words are tinted, template tokens fold away, and the composer behaves like a chat box. Every state
is saved as a screenshot under var/test-artifacts/screens/."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Page, expect

from nlaweb.explanations.models import Explanation
from tests.browser.pages import _open_page, _send, _start_conversation, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CONTENT = "article.message .tok:not(.tpl):not(.ws)"

# In-page clocks: when each explanation's done frame arrived, when the page asked the server for its
# section, and when the section first showed "done". The safety poll is switched off, so a section
# can only finish because its own frame made the page fetch it.
TIMELINE = """
window.NLAWEB_SAFETY_POLL_MS = 1e9;
window.doneFrameAt = {}; window.fetchedAt = {}; window.doneShownAt = {}; window.stageTexts = [];
const NativeSocket = window.WebSocket;
window.WebSocket = class extends NativeSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "explanation.done") window.doneFrameAt[frame.explanation_id] = performance.now();
    });
  }
};
const nativeOpen = XMLHttpRequest.prototype.open;
XMLHttpRequest.prototype.open = function (method, url, ...rest) {
  const id = (String(url).match(/explanations\\/([0-9a-f-]{36})\\//) || [])[1];
  if (id && !(id in window.fetchedAt)) window.fetchedAt[id] = performance.now();
  return nativeOpen.call(this, method, url, ...rest);
};
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("panel");
  if (!root) return;
  new MutationObserver(() => {
    root.querySelectorAll(".explanation").forEach((e) => {
      const id = e.dataset.explanationId;
      if (e.dataset.status === "done" && !(id in window.doneShownAt)) window.doneShownAt[id] = performance.now();
      const stage = e.querySelector('[data-role="stage"]');
      if (stage) window.stageTexts.push(stage.textContent);
    });
  }).observe(root, { childList: true, subtree: true, attributes: true, characterData: true });
});
"""


def _reply_done(page: Page) -> None:
    expect(page.locator("article.message.assistant .tok").first).to_be_attached()


def _open_ids(page: Page) -> list[str]:
    return parse_qs(urlparse(page.url).query).get("open", [""])[0].split(",")


def test_each_section_of_a_batch_of_five_finishes_on_its_own_frame(page: Page, stack):
    page.add_init_script(TIMELINE)
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep on the warm windowsill")
    _reply_done(page)
    tokens = page.locator(CONTENT)
    picks = [tokens.nth(i) for i in range(5)]
    for token in picks:
        token.click(modifiers=["Shift"])
    sections = page.locator("#panel .explanation")
    with stack.worker_paused():  # every frame of the job reaches sections already on screen
        page.get_by_role("button", name="Explain 5 tokens").click()
        expect(sections).to_have_count(5)
        screenshot(page, "batch-queued")
    for i in range(5):
        expect(sections.nth(i)).to_have_attribute("data-status", "done")
    expect(page.locator('[data-role="batch-status"]')).to_have_text("5 of 5 finished")
    screenshot(page, "batch-done")

    timeline = page.evaluate("({f: doneFrameAt, q: fetchedAt, s: doneShownAt})")
    ids = [sections.nth(i).get_attribute("data-explanation-id") for i in range(5)]
    print("ms from done frame to section fetched / shown:")
    for explanation_id in ids:
        frame = timeline["f"][explanation_id]
        asked, shown = timeline["q"][explanation_id], timeline["s"][explanation_id]
        print(f"  {explanation_id[:8]}: {asked - frame:7.1f} / {shown - frame:7.1f}")
        # The fetch is issued by the frame's own handler (no network in between), not by a poll.
        assert 0 <= asked - frame < 1000, timeline
        assert shown >= frame
    stage_texts = page.evaluate("stageTexts")
    assert not [t for t in stage_texts if re.search(r"\d+/\d+", t)], stage_texts  # no frozen count


def test_a_reload_brings_back_the_open_explanation_and_the_tinted_words(page: Page, stack):
    _start_conversation(page, stack)
    screenshot(page, "empty-conversation")
    with stack.worker_paused():
        _send(page, "My cat loves to sleep")
        expect(page.locator(".writing")).to_be_visible()
        screenshot(page, "reply-writing")
    _reply_done(page)
    token = page.locator("article.message.user .tok:not(.tpl):not(.ws)").nth(1)
    word = token.inner_text()
    with stack.worker_paused():
        token.click()
        expect(page.locator("#panel .explanation")).to_have_attribute("data-status", "queued")
        screenshot(page, "explanation-queued")
    section = page.locator("#panel .explanation")
    expect(section).to_have_attribute("data-status", "done")
    explanation_id = section.get_attribute("data-explanation-id")
    row = Explanation.objects.get(pk=explanation_id)

    # The panel says what it explains, in context, and which message; the word is outlined and tinted.
    expect(section.locator(".quote mark")).to_have_text(word)
    expect(section.locator(".where")).to_contain_text("user message · message 1")
    tint = row.confidence or "unscored"
    expect(token).to_have_class(_classes("explained", tint, "open"))
    expect(page.locator('#panel [data-role="metrics-help"] summary')).to_be_visible()
    expect(page).to_have_url(re.compile(f"open={explanation_id}"))  # the answer's HX-Replace-Url
    assert _open_ids(page) == [explanation_id]
    screenshot(page, "explained")

    page.reload()
    restored = page.locator("#panel .explanation")
    expect(restored).to_have_attribute("data-explanation-id", explanation_id)
    expect(restored).to_have_attribute("data-status", "done")
    token = page.locator("article.message.user .tok:not(.tpl):not(.ws)").nth(1)
    expect(token).to_have_class(_classes("explained", tint, "open"))
    assert _words(restored.locator('[data-role="text"]').inner_text()) == _words(row.text)
    screenshot(page, "reload-restored")

    # Closing the section takes it out of the URL; the tint stays, as the row does.
    restored.locator('[data-role="close-section"]').click()
    expect(page.locator("#panel .explanation")).to_have_count(0)
    expect(page).not_to_have_url(re.compile("open="))
    expect(token).to_have_class(_classes("explained", tint))


def _classes(*names: str) -> re.Pattern[str]:
    """A class attribute holding every one of `names`, in any order."""
    return re.compile("".join(rf"(?=.*\b{re.escape(n)}\b)" for n in names))


def _words(text: str) -> str:
    return " ".join(text.split())


def test_messages_read_as_prose_and_template_tokens_unfold_on_request(page: Page, stack):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    _reply_done(page)
    user = page.locator("article.message.user .prose")
    # Template tokens (<|im_start|>, the role, <|im_end|>) are on the page but folded away.
    expect(user).to_be_visible()
    assert user.inner_text() == "My cat loves to sleep"  # what a reader sees, template folded
    expect(page.locator(".tok.tpl").first).to_be_hidden()
    expect(page.locator(".template-block").first).to_be_hidden()

    page.get_by_label("show template tokens").check()
    expect(page.locator("article.message.user .tok.tpl").first).to_be_visible()
    expect(page).to_have_url(re.compile(r"[?&]tpl=1"))  # the toggle's answer writes the URL
    screenshot(page, "template-tokens-shown")
    page.reload()
    expect(page.get_by_label("show template tokens")).to_be_checked()
    expect(page.locator("article.message.user .tok.tpl").first).to_be_visible()
    # A template token is explained like any other, and the panel says what it is.
    page.locator("article.message.user .tok.tpl").first.click()
    expect(page.locator("#panel .explanation .where")).to_contain_text("template token")
    page.get_by_label("show template tokens").uncheck()
    expect(page.locator("article.message.user .tok.tpl").first).to_be_hidden()
    expect(page).not_to_have_url(re.compile(r"tpl="))  # the toggle's answer writes the URL


def test_the_composer_sends_on_enter_and_breaks_lines_on_shift_enter(page: Page, stack):
    _start_conversation(page, stack)
    box = page.get_by_placeholder("Message the model…")
    box.click()
    page.keyboard.type("Hello")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("world")
    expect(box).to_have_value("Hello\nworld")
    expect(page.locator('#composer [data-role="count"]')).to_have_text(re.compile(r"^11 / \d+$"))
    page.keyboard.press("Enter")
    expect(page.locator("article.message.user")).to_contain_text(
        "Hello\nworld", use_inner_text=True
    )
    expect(page.locator('#composer [data-role="count"]')).to_have_text(re.compile(r"^0 / \d+$"))


def test_a_starter_prompt_starts_the_conversation(page: Page, stack):
    _start_conversation(page, stack)
    starter = page.locator("button.starter").first
    prompt = starter.inner_text()
    starter.click()
    expect(page.locator("article.message.user")).to_contain_text(prompt, use_inner_text=True)
    _reply_done(page)
    expect(page.locator("button.starter")).to_have_count(0)


def test_the_page_holds_together_at_800_pixels(stack, monkeypatch, quiet_database_at_teardown):
    for narrow in _open_page(monkeypatch, 800):
        _start_conversation(narrow, stack)
        _send(narrow, "My cat loves to sleep")
        _reply_done(narrow)
        narrow.locator(CONTENT).nth(1).click()
        expect(narrow.locator("#panel .explanation")).to_have_attribute("data-status", "done")
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, f"the page scrolls sideways ({width} px)"
        screenshot(narrow, "explained-800px")
