"""The conversation page as a reader meets it (issue 7): prose with template tokens folded, explained
tokens tinted by confidence, the open explanations kept in the URL, the panel quoting its token in
context, and the small things (truncation note, starters, composer limits, favicon, error pages)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, Message, Snapshot, hash_tokens, prefix_hashes
from nlaweb.chat.starters import DEMO_STARTERS
from nlaweb.chat.templatetags.chat_tags import ago
from nlaweb.chat.tokens import content_range, in_context, message_tokens
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings, request_explanations
from nlaweb.thread.state import parse_ids

pytestmark = pytest.mark.django_db

# A SmolLM2-like templated conversation: a system preamble, then each turn wrapped in its header
# (<|im_start|>, role, newline) and footer (<|im_end|>, newline).
LEAD = ["<|im_start|>", "system", "\n", "You", " help", "<|im_end|>", "\n"]
USER = ["<|im_start|>", "user", "\n", "My", " cat", " says", " me", "ow", "<|im_end|>", "\n"]
REPLY = ["<|im_start|>", "assistant", "\n", "Cats", " purr", ".", "<|im_end|>", "\n"]
USER_CONTENT, REPLY_CONTENT = "My cat says meow", "Cats purr."
MEOW = len(LEAD) + 7  # position of "ow" in " me" + "ow"


def _store(conversation: Conversation, turns: list[tuple[str, str, list[str]]]) -> Snapshot:
    """Messages chained from the root with a snapshot whose spans give each its templated share."""
    parent, spans, texts = None, [{"message_id": None, "role": "template", "start": 0}], list(LEAD)
    spans[0]["end"] = len(LEAD)
    for role, content, pieces in turns:
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role=role, content=content
        )
        spans.append(
            {
                "message_id": str(parent.id),
                "role": role,
                "start": len(texts),
                "end": len(texts) + len(pieces),
            }
        )
        texts += pieces
    conversation.head = parent
    conversation.save()
    ids = [1000 + hash(t) % 5000 for t in texts]
    return Snapshot.objects.create(
        conversation=conversation,
        leaf=parent,
        source_id=conversation.source_id,
        token_ids=ids,
        token_texts=texts,
        spans=spans,
        tokens_hash=hash_tokens(ids),
    )


def _chat(conversation: Conversation) -> Snapshot:
    return _store(conversation, [("user", USER_CONTENT, USER), ("assistant", REPLY_CONTENT, REPLY)])


def _done(snapshot: Snapshot, position: int, confidence: str = "high", **fields) -> Explanation:
    return Explanation.objects.create(
        snapshot=snapshot,
        position=position,
        source_id=snapshot.source_id,
        settings_key=ExplainSettings().key(),
        status="done",
        stage="done",
        text="A cat's sound.",
        confidence=confidence,
        relative_mse=0.2,
        fve=0.8,
        cosine=0.9,
        mse=0.1,
        l2_norm=12.0,
        **fields,
    )


def _page(persona, conversation: Conversation, query: str = "") -> str:
    url = reverse("conversation", args=[conversation.id]) + query
    return persona.client.get(url, follow=True).content.decode()


def _token_classes(page: str, position: int) -> str:
    found = re.search(rf'class="([^"]*)"[^>]*\sdata-position="{position}"', page)
    assert found, f"no token {position} on the page"
    return found.group(1)


# -- reading tokens --------------------------------------------------------------------------------
def test_a_messages_words_are_told_apart_from_its_template_header_and_footer():
    assert content_range(USER, USER_CONTENT) == (3, 8)
    tokens = message_tokens(list(range(len(USER))), USER, 0, len(USER), USER_CONTENT)
    assert [t.text for t in tokens if not t.template] == ["My", " cat", " says", " me", "ow"]
    assert [t.template for t in tokens][:3] == [True, True, True]


def test_a_character_split_over_tokens_still_finds_the_message_in_its_template():
    # "é" is two UTF-8 bytes; tokens holding one byte each decode to U+FFFD one by one.
    texts = ["<|im_start|>", "user", "\n", "Caf", "\ufffd", "\ufffd", " ok", "<|im_end|>"]
    assert content_range(texts, "Café ok") == (3, 7)


def test_content_the_template_rewrote_counts_every_token_as_content():
    assert content_range(["<s>", "Hello"], "Goodbye") == (0, 2)
    assert content_range(["<s>"], "") == (0, 1)


def test_a_token_is_quoted_between_its_neighbours_inside_its_message():
    texts = LEAD + USER
    quote = in_context(texts, MEOW, len(LEAD) + 3, len(LEAD) + 8, width=3)
    assert (quote.before, quote.token, quote.after) == (" cat says me", "ow", "")
    assert (quote.cut_before, quote.cut_after) == (True, False)


# -- the thread as prose ---------------------------------------------------------------------------
def test_template_tokens_and_the_system_prompt_are_folded_chips_and_words_are_prose(owner):
    conversation = start_conversation(owner.user)
    _chat(conversation)
    page = _page(owner, conversation)
    assert "tpl" in _token_classes(page, 0)  # <|im_start|> of the system preamble
    assert "tpl" in _token_classes(page, len(LEAD))  # the user turn's <|im_start|>
    assert "tpl" not in _token_classes(page, MEOW)
    assert 'class="template-block"' in page
    assert 'id="show-template"' in page and "show-template" not in re.search(
        r'<div class="layout[^"]*"', page
    ).group(0)
    shown = _page(owner, conversation, "?tpl=1")
    assert re.search(r'<div class="layout show-template"', shown)
    assert re.search(r'id="show-template"[^>]*value="1" checked', shown)
    assert not re.search(r'id="show-template"[^>]*checked', page)


def test_explained_tokens_are_tinted_by_confidence_and_in_progress_ones_marked(owner):
    conversation = start_conversation(owner.user)
    snapshot = _chat(conversation)
    _done(snapshot, MEOW, "low")
    _done(snapshot, MEOW - 1, "high")
    Explanation.objects.create(
        snapshot=snapshot, position=MEOW - 2, source_id=snapshot.source_id,
        settings_key=ExplainSettings().key(), status="queued",
    )  # fmt: skip
    Explanation.objects.create(
        snapshot=snapshot, position=MEOW - 3, source_id=snapshot.source_id,
        settings_key=ExplainSettings().key(), status="failed", error="boom",
    )  # fmt: skip
    page = _page(owner, conversation)
    assert _token_classes(page, MEOW).split() == ["tok", "explained", "low"]
    assert _token_classes(page, MEOW - 1).split() == ["tok", "explained", "high"]
    assert _token_classes(page, MEOW - 2).split() == ["tok", "explained", "pending"]
    assert _token_classes(page, MEOW - 3).split() == ["tok"]  # failed: not explained


def test_a_later_turn_keeps_the_tints_and_rows_of_the_tokens_it_shares_with_earlier_ones(
    owner, django_capture_on_commit_callbacks
):
    conversation = start_conversation(owner.user)
    first = _store(conversation, [("user", USER_CONTENT, USER)])
    row = _done(first, MEOW)
    later = _chat(Conversation.objects.get(pk=conversation.pk))
    Message.objects.filter(pk=later.leaf_id).update(parent=first.leaf)
    later.spans[1]["message_id"] = str(first.leaf_id)  # the same user message on both paths
    later.save()
    assert prefix_hashes(later.token_ids)[MEOW] == prefix_hashes(first.token_ids)[MEOW]
    assert "explained high" in _token_classes(_page(owner, conversation), MEOW)
    with django_capture_on_commit_callbacks() as callbacks:
        rows = request_explanations(later, [MEOW, MEOW + 3])
    assert rows[0].pk == row.pk  # same tokens up to here: same activation, same explanation
    assert rows[1].snapshot_id == later.pk and rows[1].status == "queued"
    assert len(callbacks) == 1  # only the new token is sent to the worker


def test_a_different_prefix_is_never_given_another_snapshots_explanation(owner):
    conversation = start_conversation(owner.user)
    first = _chat(conversation)
    _done(first, MEOW)
    other = _store(
        Conversation.objects.get(pk=conversation.pk),
        [("user", "My dog says meow", [*USER[:4], " dog", *USER[5:]])],
    )
    (row,) = request_explanations(other, [MEOW])
    assert row.snapshot_id == other.pk and row.status == "queued"


# -- the panel and the URL -------------------------------------------------------------------------
def test_the_url_reopens_the_explanations_it_names_and_outlines_their_tokens(owner, stranger):
    conversation = start_conversation(owner.user)
    snapshot = _chat(conversation)
    row = _done(snapshot, MEOW)
    strangers = start_conversation(stranger.user)
    foreign = _done(_chat(strangers), MEOW)
    page = _page(owner, conversation, f"?open={row.id},{foreign.id},not-an-id")
    assert f'data-explanation-id="{row.id}"' in page
    assert f'data-explanation-id="{foreign.id}"' not in page  # another's row never opens
    assert "open" in _token_classes(page, MEOW).split()
    assert "Click a word to see" not in page  # the panel shows the explanation, not the intro


def test_the_open_list_is_parsed_forgivingly_and_bounded():
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(20)]
    assert [str(i) for i in parse_ids(",".join([ids[0], "x", ids[0], ids[1]]))] == ids[:2]
    assert len(parse_ids(",".join(ids))) == 16


def test_the_panel_quotes_its_token_in_context_and_names_the_message(owner):
    conversation = start_conversation(owner.user)
    snapshot = _chat(conversation)
    row = _done(snapshot, MEOW)
    panel = owner.client.get(reverse("explanation_panel", args=[row.id])).content.decode()
    quote = re.search(r'<blockquote class="quote"[^>]*>(.*?)</blockquote>', panel, re.S).group(1)
    assert quote == "My cat says me<mark>ow</mark>"
    assert "user message · message 1 · token #" in panel
    template = _done(snapshot, len(LEAD) + 1)  # "user", the role name of the header
    panel = owner.client.get(reverse("explanation_panel", args=[template.id])).content.decode()
    assert "template token" in panel and "chat-template token, not a word" in panel


def test_the_panel_defines_every_metric_it_shows(owner):
    conversation = start_conversation(owner.user)
    row = _done(_chat(conversation), MEOW)
    panel = _page(owner, conversation, f"?open={row.id}")
    help_block = re.search(r'<details class="help".*?</details>', panel, re.S).group(0)
    for term in ("relative MSE", "FVE", "cosine", "‖activation‖", "specificity", "confidence"):
        assert f"<dt>{term}</dt>" in help_block
    assert "negative when" in help_block


def test_the_panel_shows_the_specificity_beside_the_pill_once_there_is_one(owner):
    conversation = start_conversation(owner.user)
    snapshot = _chat(conversation)
    ranked = _done(snapshot, MEOW, confidence="medium", specificity=0.834)
    panel = owner.client.get(reverse("explanation_panel", args=[ranked.id])).content.decode()
    shown = re.search(r'<span[^>]*data-role="specificity">([^<]*)</span>', panel)
    assert shown and shown.group(1) == "more specific than 83% of reference explanations"
    unranked = _done(snapshot, MEOW - 1)
    panel = owner.client.get(reverse("explanation_panel", args=[unranked.id])).content.decode()
    assert 'data-role="specificity"' not in panel


# -- replies, composer, starters -------------------------------------------------------------------
def test_a_reply_cut_by_the_token_limit_says_so(owner, settings):
    settings.REPLY_MAX_NEW_TOKENS = 200
    conversation = start_conversation(owner.user)
    snapshot = _chat(conversation)
    assert "Stopped at" not in _page(owner, conversation)
    Message.objects.filter(pk=snapshot.leaf_id).update(truncated=True)
    page = _page(owner, conversation)
    assert "Stopped at 200 tokens" in page


def test_a_new_conversation_offers_starter_prompts_that_send_themselves(owner):
    conversation = start_conversation(owner.user)
    page = _page(owner, conversation)
    for prompt in DEMO_STARTERS:
        assert f'name="content" value="{prompt}"' in page
    _chat(Conversation.objects.get(pk=conversation.pk))
    assert 'class="starter"' not in _page(owner, conversation)


def test_the_composer_counts_against_the_limit_without_cutting_a_paste(owner, settings):
    settings.MAX_MESSAGE_CHARS = 300
    page = _page(owner, start_conversation(owner.user))
    assert re.search(r'<textarea[^>]*data-max-chars="300"', page)
    assert "maxlength" not in page  # the browser would silently cut a longer paste
    assert "0 / 300</span>" in page and "Shift+Enter" in page


def test_a_message_over_the_limit_is_refused_with_the_sentence_and_kept_in_the_box(owner, settings):
    settings.MAX_MESSAGE_CHARS = 300
    conversation = start_conversation(owner.user)
    text = "a" * 301
    response = owner.client.post(reverse("send", args=[conversation.id]), {"content": text})
    page = response.content.decode()
    assert "This message has 301 characters; the limit is 300. Shorten it and send again." in page
    assert f"{text}</textarea>" in page
    assert Message.objects.filter(conversation=conversation).count() == 0


def test_recent_times_read_just_now():
    now = timezone.now()
    assert ago(now - timedelta(seconds=5)) == "just now"
    assert ago(now - timedelta(minutes=5)) == "5\xa0minutes ago"


def test_every_page_names_a_favicon_and_the_old_path_redirects_to_it(owner):
    page = _page(owner, start_conversation(owner.user))
    assert re.search(r'<link rel="icon" href="[^"]*favicon.svg"', page)
    response = owner.client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")


# -- error pages -----------------------------------------------------------------------------------
def test_a_stranger_gets_the_apps_404_page_without_debug_details(owner, stranger, settings):
    settings.DEBUG = False
    conversation = start_conversation(owner.user)
    response = stranger.client.get(reverse("conversation", args=[conversation.id]))
    page = response.content.decode()
    assert response.status_code == 404
    assert "conversations are private to their owner" in page and 'class="brand"' in page
    assert "URLconf" not in page and "Traceback" not in page


def test_the_500_page_is_in_the_apps_style_and_promises_nothing_was_lost():
    from django.views.defaults import server_error

    page = server_error(RequestFactory().get("/")).content.decode()
    assert "Something broke on our side" in page and "stored and safe" in page


def test_another_persons_identical_tokens_never_share_their_explanation(owner, stranger):
    mine = _chat(start_conversation(owner.user))
    theirs = _chat(start_conversation(stranger.user))
    assert mine.token_ids == theirs.token_ids
    _done(theirs, MEOW)
    page = _page(owner, Conversation.objects.get(pk=mine.conversation_id))
    assert "explained" not in _token_classes(page, MEOW)
    (row,) = request_explanations(mine, [MEOW])
    assert row.snapshot_id == mine.pk and row.status == "queued"
