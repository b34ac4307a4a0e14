"""The conversation page's context: the thread of the branch the URL names, the open explanations'
panel, the composer's limits. The chat views, the edit views and the explanation views all answer
with it."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.http import HttpRequest

from nlaweb.chat.edit import MAX_SEED
from nlaweb.chat.forms import MessageForm
from nlaweb.chat.models import Conversation, prefix_hashes
from nlaweb.chat.starters import starters_for
from nlaweb.explanations.with_source import split_open
from nlaweb.sources.configured import build_figures, get_source
from nlaweb.thread.panel import opened, panel_context
from nlaweb.thread.state import PageState
from nlaweb.thread.view import shown_leaf, thread_view
from workers.nla.types import MAX_POSITIONS_PER_REQUEST


def page_context(
    request: HttpRequest,
    conversation: Conversation,
    form: MessageForm | None = None,
    error: str = "",
    at: str | None = None,
) -> dict[str, object]:
    """The page's context; its URL's state (nlaweb/thread/state.py: `at`, `open`, `tpl`) says
    which branch shows, which explanations are open and whether template tokens show, so a reload
    or a copied link shows the same page. After a POST the branch is the conversation's (new)
    head; `state` in the context is the URL of what it shows."""
    source = get_source(conversation.source_id)
    state = PageState.of(request)
    at = at or (request.GET.get("at") if request.method == "GET" else None)
    view = thread_view(conversation, shown_leaf(conversation, at))
    prefixes = set(prefix_hashes(view.snapshot.token_ids)) if view.snapshot else set()
    rows = opened(conversation, state.open, prefixes)
    shown, beside = split_open(rows)
    panel = panel_context(shown)
    return {
        "view": view,
        "chat_error": error,
        "seed": secrets.randbelow(MAX_SEED),
        "form": form or MessageForm(),
        "source": source,
        "figures": build_figures(conversation.source_id) if source else {},
        "max_positions": MAX_POSITIONS_PER_REQUEST,  # tokens one shift+click selection may hold
        "max_chars": settings.MAX_MESSAGE_CHARS,
        "reply_max_tokens": settings.REPLY_MAX_NEW_TOKENS,
        "starters": starters_for(source),
        "panel": panel,
        "beside": beside,  # rows of other sources shown beside a section (explain with…)
        "open_prefixes": {s.e.prefix_hash for s in panel["sections"]},
        "show_template": state.tpl,
        "state": state.showing(view.leaf.pk if view.leaf else "").opening(e.pk for e in rows),
    }
