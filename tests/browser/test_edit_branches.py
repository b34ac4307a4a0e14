"""Issue 8 in Chromium: the seed's example (reply edited "cat" → "dog", explain " dog"), branch
switching that keeps both branches' explanations, regenerate with its sampling shown, and an edit
full of markup that renders as text."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from nlaweb.chat.models import Message, Snapshot
from nlaweb.explanations.models import Explanation
from tests.browser.pages import _conversation_id, _send, _start_conversation, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WORDS = ".tok:not(.tpl):not(.ws)"


def _settled(page: Page) -> None:
    """The thread has no reply in progress and its last message has tokens."""
    expect(page.locator("#thread")).to_have_attribute("data-generating", "")
    expect(page.locator("article.message").last.locator(".tok").first).to_be_attached()


def _edit(page: Page, message, text: str) -> None:
    message.hover()
    message.get_by_role("button", name="Edit").click()
    box = page.get_by_label("edited message")
    expect(box).to_be_focused()
    box.fill(text)
    box.press("Enter")


def _explain(page: Page, token):
    """Click a token and wait for its own explanation (not the one the panel showed before)."""
    with page.expect_response(re.compile(r"/explain$")):
        token.click()
    section = page.locator("#panel .explanation")
    expect(section).to_have_attribute("data-position", token.get_attribute("data-position"))
    expect(section).to_have_attribute("data-status", "done")
    return section


def _token(message, text: str):
    return message.locator(WORDS).filter(has_text=re.compile(rf"^\s*{re.escape(text)}$"))


def test_the_seeds_example_edit_the_reply_from_cat_to_dog_and_explain_dog(page: Page, stack):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    _settled(page)
    reply = page.locator("article.message.assistant")
    old_reply_id = reply.get_attribute("data-message-id")
    _edit(page, reply, "The cat runs in the park.")
    _settled(page)
    cat_reply = page.locator("article.message.assistant")
    expect(cat_reply.locator('[data-role="branch-position"]')).to_have_text("2 / 2")
    expect(cat_reply.locator(".origin").first).to_have_text("edited")
    _explain(page, _token(cat_reply, "cat"))
    cat_id = page.locator("#panel .explanation").get_attribute("data-explanation-id")

    _edit(page, cat_reply, "The dog runs in the park.")
    _settled(page)
    dog_reply = page.locator("article.message.assistant")
    expect(dog_reply.locator('[data-role="branch-position"]')).to_have_text("3 / 3")
    dog = _token(dog_reply, "dog")
    position = int(dog.get_attribute("data-position"))
    section = _explain(page, dog)
    expect(section.locator(".quote mark")).to_have_text(" dog")
    screenshot(page, "edited-dog-explained")

    # The worker captured the edited conversation: the row's token is the snapshot's " dog".
    row = Explanation.objects.select_related("snapshot").get(
        pk=section.get_attribute("data-explanation-id")
    )
    leaf = Message.objects.get(pk=dog_reply.get_attribute("data-message-id"))
    assert row.snapshot == Snapshot.objects.get(leaf=leaf)
    assert row.position == position
    assert row.snapshot.token_texts[position] == " dog" == row.token_text
    assert row.token_id == row.snapshot.token_ids[position]
    assert leaf.content == "The dog runs in the park." and leaf.origin == "edited"

    # Compare " dog" with the "cat" branch: the edit swapped one token for one, so one click
    # compares the same position (no second pick), both columns laid out as panel sections.
    section.get_by_role("button", name="Compare with branch…").click()
    compare = section.locator('[data-role="compare"]')
    compare.get_by_role("button", name=re.compile("The cat runs in the park")).click()
    side = section.locator(".side-by-side")
    expect(
        side.locator(".compare-side.mine .explanation [data-role='relative-mse']")
    ).to_be_visible()
    expect(side.locator(".compare-side.theirs .explanation")).to_have_attribute(
        "data-status", "done"
    )
    expect(side.locator(".compare-side.mine mark")).to_have_text(" dog")
    expect(side.locator(".compare-side.theirs .quote mark")).to_have_text(" cat")
    screenshot(page, "compare-dog-with-cat")

    # Back to the "cat" branch and forth: both branches keep their explanations.
    switcher = dog_reply.get_by_role("button", name="previous alternative")
    box = switcher.bounding_box()
    assert box["width"] >= 28 and box["height"] >= 28, box  # a comfortable target
    switcher.click()
    cat_reply = page.locator("article.message.assistant")
    expect(cat_reply.locator('[data-role="branch-position"]')).to_have_text("2 / 3")
    expect(_token(cat_reply, "cat")).to_have_class(re.compile(r"\bexplained\b"))
    assert Explanation.objects.get(pk=cat_id).status == "done"
    cat_reply.get_by_role("button", name="previous alternative").click()
    expect(page.locator("article.message.assistant")).to_have_attribute(
        "data-message-id", old_reply_id
    )
    page.reload()  # the URL names the branch on screen
    expect(page.locator("article.message.assistant")).to_have_attribute(
        "data-message-id", old_reply_id
    )
    for shown in ("2 / 3", "3 / 3"):
        reply = page.locator("article.message.assistant")
        reply.get_by_role("button", name="next alternative").click()
        expect(reply.locator('[data-role="branch-position"]')).to_have_text(shown)
    expect(_token(page.locator("article.message.assistant"), "dog")).to_have_class(
        re.compile(r"\bexplained\b")
    )
    screenshot(page, "branch-switched-back")


def test_editing_a_user_message_regenerates_and_regenerate_shows_its_sampling(page: Page, stack):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    _settled(page)
    _edit(page, page.locator("article.message.user"), "My dog loves to sleep")
    _settled(page)
    user = page.locator("article.message.user")
    expect(user.locator('[data-role="branch-position"]')).to_have_text("2 / 2")
    expect(user.locator(".prose")).to_contain_text("My dog loves to sleep")
    reply = page.locator("article.message.assistant")
    reply.hover()
    reply.locator("summary", has_text="Regenerate").click()
    form = reply.locator("details.regenerate form")
    form.get_by_label("seed").fill("4242")
    form.get_by_role("button", name="Regenerate").click()
    _settled(page)
    reply = page.locator("article.message.assistant")
    expect(reply.locator('[data-role="sampling"]')).to_have_text("temperature 0.7 · seed 4242")
    expect(reply.locator('[data-role="branch-position"]')).to_have_text("2 / 2")
    stored = Message.objects.get(pk=reply.get_attribute("data-message-id"))
    assert (stored.origin, stored.temperature, stored.seed) == ("regenerated", 0.7, 4242)
    screenshot(page, "regenerated")


def test_an_edit_full_of_markup_renders_as_text(page: Page, stack):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _start_conversation(page, stack)
    _send(page, "Hello")
    _settled(page)
    attack = "<img src=x onerror=alert(1)> and <script>alert(2)</script>"
    _edit(page, page.locator("article.message.assistant"), attack)
    _settled(page)
    reply = page.locator("article.message.assistant .prose")
    assert reply.inner_text() == attack
    expect(page.locator("article.message img")).to_have_count(0)
    page.reload()
    expect(page.locator("article.message.assistant .prose")).to_be_visible()
    assert page.locator("article.message.assistant .prose").inner_text() == attack
    assert dialogs == []
    assert Message.objects.filter(conversation_id=_conversation_id(page), content=attack).exists()


def test_explain_all_turns_a_message_into_a_heatmap_whose_tokens_open_at_once(page: Page, stack):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    _settled(page)
    user = page.locator("article.message.user")
    words = user.locator(WORDS).count()
    user.hover()
    user.get_by_role("button", name="Explain all").click()
    expect(page.locator('article.message.user [data-role="run-count"]')).to_have_text(
        f"{words} / {words} explained"
    )
    user = page.locator("article.message.user")
    expect(user.locator(".heat-legend")).to_be_visible()
    for i in range(words):
        # styled.js set the tint from data-heat through the CSSOM (no inline style in the markup)
        expect(user.locator(WORDS).nth(i)).to_have_attribute("style", re.compile(r"--heat: ?\d"))
    screenshot(page, "heatmap")
    with page.expect_response(re.compile(r"/explain$")) as opened:
        user.locator(WORDS).nth(2).click()
    assert 'data-status="done"' in opened.value.text()  # stored: no waiting


def test_a_waiting_row_shows_its_place_and_can_be_cancelled(page: Page, stack):
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    _settled(page)
    words = page.locator(f"article.message.user {WORDS}")
    section = page.locator("#panel .explanation")
    with stack.worker_paused():
        words.nth(0).click()
        expect(section).to_have_attribute("data-status", "queued")
        expect(section.locator('[data-role="place"]')).to_have_text("1st in line")
        screenshot(page, "queued-first-in-line")
        section.get_by_role("button", name="Cancel").click()
        expect(page.locator("#panel .explanation")).to_have_attribute("data-status", "cancelled")
    cancelled_id = page.locator("#panel .explanation").get_attribute("data-explanation-id")
    # The worker takes the next job; the cancelled row is never started.
    with page.expect_response(re.compile(r"/explain$")):
        words.nth(1).click()
    expect(page.locator("#panel .explanation")).to_have_attribute("data-status", "done")
    assert Explanation.objects.get(pk=cancelled_id).status == "cancelled"
    # Asked for again, it is explained.
    with page.expect_response(re.compile(r"/explain$")):
        words.nth(0).click()
    expect(page.locator("#panel .explanation")).to_have_attribute("data-status", "done")


def test_a_branch_switch_never_leaves_the_other_branchs_explanation_on_its_position(
    page: Page, stack
):
    """Issue 14.1: reply edited to "zebra", then to "dog", " dog" explained, ‹ back to "zebra": the
    token at " dog"'s position is another token, so it is neither tinted nor outlined, the URL opens
    nothing and the panel does not show the dog's explanation (nor after a reload)."""
    _start_conversation(page, stack)
    _send(page, "Which animal do you prefer?")
    _settled(page)
    _edit(page, page.locator("article.message.assistant"), "I prefer the zebra.")
    _settled(page)
    _edit(page, page.locator("article.message.assistant"), "I prefer the dog.")
    _settled(page)
    dog_reply = page.locator("article.message.assistant")
    dog = _token(dog_reply, "dog")
    position = dog.get_attribute("data-position")
    section = _explain(page, dog)
    dog_id = section.get_attribute("data-explanation-id")
    expect(dog).to_have_class(re.compile(r"\bopen\b"))
    expect(page).to_have_url(re.compile(f"open={dog_id}"))  # the answer's HX-Replace-Url

    dog_reply.get_by_role("button", name="previous alternative").click()
    zebra_reply = page.locator("article.message.assistant")
    expect(zebra_reply.locator('[data-role="branch-position"]')).to_have_text("2 / 3")
    same_place = page.locator(f'#thread .tok[data-position="{position}"]')
    assert "dog" not in same_place.inner_text()
    expect(page.locator(f'#panel [data-explanation-id="{dog_id}"]')).to_have_count(0)
    expect(same_place).not_to_have_class(re.compile(r"\b(explained|open|low|medium|high)\b"))
    expect(page.locator("#thread .tok.open")).to_have_count(0)
    expect(page).not_to_have_url(re.compile("open="))
    screenshot(page, "branch-back-to-zebra")

    # A link that still names the dog's row on the zebra branch opens nothing there.
    page.goto(page.url + ("&" if "?" in page.url else "?") + f"open={dog_id}")
    expect(page.locator('article.message.assistant [data-role="branch-position"]')).to_have_text(
        "2 / 3"
    )
    expect(page.locator(f'#panel [data-explanation-id="{dog_id}"]')).to_have_count(0)
    expect(page.locator(f'#thread .tok[data-position="{position}"]')).not_to_have_class(
        re.compile(r"\b(explained|open)\b")
    )
    expect(page.locator("#thread .tok.open")).to_have_count(0)
    expect(page).not_to_have_url(re.compile("open="))

    # Forth to "dog": its own token is tinted by its own row.
    page.locator("article.message.assistant").get_by_role("button", name="next alternative").click()
    dog = _token(page.locator("article.message.assistant"), "dog")
    expect(dog).to_have_class(re.compile(r"\bexplained\b"))
