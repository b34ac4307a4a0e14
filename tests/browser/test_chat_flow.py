"""A person's path through the app in Debian's Chromium, driven by Playwright, against the live stack."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from nlaweb.chat.models import Snapshot
from nlaweb.explanations.models import Explanation
from tests.browser.pages import (
    NUMBER,
    STAGES_SHOWN,
    _conversation_id,
    _record_frames,
    _send,
    _stages_shown,
    _start_conversation,
    _types,
    _words,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_person_sends_a_message_clicks_a_token_and_reads_its_explanation(page: Page, stack):
    frames = _record_frames(page)
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    expect(page.locator("article.message.user")).to_contain_text("My cat loves to sleep")
    # When the reply is done the thread is re-rendered with token chips for every message.
    chips = page.locator("article.message.assistant .tok:not(.tpl):not(.ws)")
    expect(chips.first).to_be_visible()
    types = _types(frames)
    assert "chat.delta" in types and types.index("chat.delta") < types.index("chat.done")

    # The worker is held while the chip is clicked, so every frame of the job reaches a panel that
    # is already on screen: it must show the stages, the streamed text, then the score.
    panel = page.locator("#panel .explanation")
    with stack.worker_paused():
        with page.expect_response(re.compile(r"/explain$")) as clicked:
            page.locator("article.message.user .tok:not(.tpl):not(.ws)").last.click()
        expect(panel).to_have_attribute("data-status", "queued")
        expect(panel.locator(".stages li")).to_have_text(
            ["queued", "loading", "capturing", "verbalizing", "scoring"]
        )
    assert 'data-status="queued"' in clicked.value.text()
    expect(panel).to_have_attribute("data-status", "done")

    explanation_id = panel.get_attribute("data-explanation-id")
    explanation = Explanation.objects.get(pk=explanation_id)
    assert explanation.status == "done"
    assert explanation.text.strip(), "the tiny AV wrote nothing; pick a position it explains"
    mine = [f for f in frames if f.get("explanation_id") == explanation_id]
    stages = [f["stage"] for f in mine if f["type"] == "explanation.progress"]
    assert stages == ["loading", "capturing", "verbalizing", "scoring"]
    assert _types(mine)[-1] == "explanation.done"
    steps = [f["stage"] if f["type"] == "explanation.progress" else f["type"] for f in mine]
    texts_at = [i for i, step in enumerate(steps) if step == "explanation.text"]
    assert texts_at, steps  # the AV's text streamed while it was verbalizing, not after
    assert steps.index("verbalizing") < min(texts_at), steps
    assert max(texts_at) < steps.index("scoring"), steps
    assert mine[-1]["text"] == explanation.text

    shown = page.evaluate("window.panelLog")
    before_done = [entry for entry in shown if entry["status"] == "queued"]
    assert _stages_shown(before_done) == STAGES_SHOWN, shown
    streamed = [e["text"] for e in before_done if e["stage"] == "verbalizing" and e["text"]]
    assert streamed and streamed[-1] == explanation.text, shown
    assert shown[-1]["status"] == "done"

    assert _words(panel.locator('[data-role="text"]').inner_text()) == _words(explanation.text)
    for role in ("relative-mse", "fve", "cosine"):
        expect(panel.locator(f'[data-role="{role}"]')).to_have_text(NUMBER)
    expect(panel.locator('[data-role="confidence"]')).to_have_text(
        f"{explanation.confidence} confidence"
    )

    # Reloading shows the same stored explanation: a second click is a lookup of the same row.
    page.reload()
    with page.expect_response(re.compile(r"/explain$")) as again:
        page.locator("article.message.user .tok:not(.tpl):not(.ws)").last.click()
    assert 'data-status="done"' in again.value.text()
    expect(page.locator("#panel .explanation")).to_have_attribute(
        "data-explanation-id", explanation_id
    )
    assert Explanation.objects.filter(snapshot__conversation_id=_conversation_id(page)).count() == 1


def test_a_person_shift_clicks_two_tokens_and_explains_both_in_one_job(page: Page, stack):
    frames = _record_frames(page)
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    expect(page.locator("article.message.assistant .tok:not(.tpl):not(.ws)").first).to_be_visible()
    chips = page.locator("article.message.user .tok:not(.tpl):not(.ws)")
    picks = [chips.nth(chips.count() - 2), chips.last]
    positions = [int(chip.get_attribute("data-position")) for chip in picks]

    # Shift+clicks select (a class and aria-pressed) and explain nothing yet.
    picks[0].click(modifiers=["Shift"])
    expect(picks[0]).to_have_attribute("aria-pressed", "true")
    expect(picks[0]).to_have_class(re.compile(r"\bselected\b"))
    expect(page.get_by_role("button", name="Explain 1 token")).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#selection-form")).to_be_hidden()
    expect(picks[0]).not_to_have_attribute("aria-pressed", "true")
    expect(page.locator("#thread .tok.selected")).to_have_count(0)
    picks[0].click(modifiers=["Shift"])
    picks[1].click(modifiers=["Shift"])
    page.keyboard.press("Escape")  # Escape drops the selection like Clear
    expect(page.locator("#selection-form")).to_be_hidden()
    expect(page.locator("#thread .tok.selected")).to_have_count(0)
    picks[0].click(modifiers=["Shift"])
    picks[1].click(modifiers=["Shift"])
    explain = page.get_by_role("button", name="Explain 2 tokens")
    expect(explain).to_be_visible()
    expect(page.locator("#panel .explanation")).to_have_count(0)

    # The worker is held while the selection is sent, so both sections are on screen before any
    # frame of the job arrives: each must show its own stages and streamed text, then its score.
    sections = page.locator("#panel .explanation")
    with stack.worker_paused():
        with page.expect_response(re.compile(r"/explain$")) as asked:
            explain.click()
        expect(sections).to_have_count(2)
        for i in range(2):
            expect(sections.nth(i)).to_have_attribute("data-status", "queued")
    assert asked.value.text().count('data-status="queued"') == 2
    expect(page.locator("#selection-form")).to_be_hidden()  # the selection is cleared once sent
    expect(picks[0]).not_to_have_attribute("aria-pressed", "true")
    expect(page.locator("#thread .tok.selected")).to_have_count(0)
    for i in range(2):
        expect(sections.nth(i)).to_have_attribute("data-status", "done")
    expect(sections).to_have_count(2)

    ids = [sections.nth(i).get_attribute("data-explanation-id") for i in range(2)]
    rows = [Explanation.objects.get(pk=i) for i in ids]
    assert [row.position for row in rows] == positions
    assert [row.status for row in rows] == ["done", "done"]
    # store.explain_job marks every row of one job running in one update: one job explained both.
    assert rows[0].started_at == rows[1].started_at
    shown = page.evaluate("window.panelLog")
    for section, row in zip([sections.nth(0), sections.nth(1)], rows, strict=True):
        assert row.text.strip(), "the tiny AV wrote nothing; pick positions it explains"
        mine = [f for f in frames if f.get("explanation_id") == str(row.id)]
        assert _types(mine)[-1] == "explanation.done"
        assert mine[-1]["text"] == row.text
        before_done = [e for e in shown if e["id"] == str(row.id) and e["status"] == "queued"]
        assert _stages_shown(before_done) == STAGES_SHOWN, shown
        streamed = [e["text"] for e in before_done if e["stage"] == "verbalizing" and e["text"]]
        assert streamed and streamed[-1] == row.text, shown
        assert _words(section.locator('[data-role="text"]').inner_text()) == _words(row.text)
        for role in ("relative-mse", "fve", "cosine"):
            expect(section.locator(f'[data-role="{role}"]')).to_have_text(NUMBER)
    assert Explanation.objects.filter(snapshot__conversation_id=_conversation_id(page)).count() == 2


def test_a_failed_explanation_shows_one_sentence_and_the_conversation_goes_on(page: Page, stack):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    expect(page.locator("article.message.assistant .tok:not(.tpl):not(.ws)").first).to_be_visible()
    # The source of this conversation's tokens is retired: no worker serves it any more.
    conversation_id = _conversation_id(page)
    Snapshot.objects.filter(conversation_id=conversation_id).update(source_id="retired-source")

    page.locator("article.message.user .tok:not(.tpl):not(.ws)").last.click()
    panel = page.locator("#panel .explanation")
    expect(panel).to_have_attribute("data-status", "failed")
    expect(panel.get_by_role("alert")).to_have_text(
        "No worker serves the NLA source 'retired-source' (this worker serves: tiny-llama); "
        "ask an administrator to start a worker for it."
    )
    expect(panel.get_by_role("alert")).to_have_count(1)

    # The conversation is intact and goes on: a next message gets a reply with explainable tokens.
    expect(page.locator("article.message")).to_have_count(2)
    expect(page.locator("article.message.user")).to_contain_text("My cat loves to sleep")
    _send(page, "Tell me more")
    expect(page.locator("article.message")).to_have_count(4)
    second_reply = page.locator("article.message.assistant").nth(1)
    expect(second_reply.locator(".tok:not(.tpl):not(.ws)").first).to_be_visible()
    second_reply.locator(".tok:not(.tpl):not(.ws)").last.click()
    expect(page.locator("#panel .explanation")).to_have_attribute("data-status", "done")


def test_an_empty_message_shows_a_sentence_in_the_page(page: Page, stack):
    _start_conversation(page, stack)
    _send(page, "   ")
    expect(page.get_by_role("alert")).to_have_text(re.compile("empty message cannot be sent"))
    expect(page.locator("article.message")).to_have_count(0)
    page.get_by_role("alert").evaluate("node => node.remove()")
    box = page.get_by_placeholder("Message the model…")
    box.fill("  \n  ")
    box.press("Enter")  # Enter on spaces says why too, rather than doing nothing
    expect(page.get_by_role("alert")).to_have_text(re.compile("empty message cannot be sent"))


def test_a_paste_over_the_limit_is_kept_whole_and_refused_with_the_servers_sentence(
    page: Page, stack
):
    _start_conversation(page, stack)
    text = "word " * 800 + "end"  # 4003 characters; the stack's MAX_MESSAGE_CHARS is 4000
    box = page.get_by_placeholder("Message the model…")
    box.fill(text)
    expect(box).to_have_value(text)  # nothing cut on the way in
    expect(page.locator('#composer [data-role="count"]')).to_have_text("4003 / 4000")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_have_text(
        "This message has 4003 characters; the limit is 4000. Shorten it and send again."
    )
    expect(page.get_by_placeholder("Message the model…")).to_have_value(text)
    expect(page.locator("article.message")).to_have_count(0)
