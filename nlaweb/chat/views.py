"""Chat pages. Each view: authorize, parse, call one domain function, render."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST, require_safe

from nlaweb.accounts.guests import guest_on_post
from nlaweb.chat.conversation import (
    ReplyInProgress,
    send_message,
    shown_leaf,
    start_conversation,
    thread_view,
)
from nlaweb.chat.edit import MAX_SEED
from nlaweb.chat.forms import MessageForm
from nlaweb.chat.models import Conversation, prefix_hashes
from nlaweb.chat.starters import starters_for
from nlaweb.explanations.sections import opened, panel_context
from nlaweb.explanations.with_source import split_open
from nlaweb.sources import build_figures, get_source
from workers.nla.types import MAX_POSITIONS_PER_REQUEST


def owned(request: HttpRequest, conversation_id: str) -> Conversation:
    """The conversation if the user owns it; 404 otherwise (no hint that it exists)."""
    return get_object_or_404(Conversation, pk=conversation_id, owner_id=request.user.pk)


@require_safe  # HEAD answers like GET (uptime probes and link checkers send it)
def home(request: HttpRequest) -> HttpResponse:
    conversations = Conversation.objects.filter(owner_id=request.user.pk)[:50]
    return render(request, "chat/home.html", {"conversations": conversations})


@require_POST
@guest_on_post  # a visitor's first conversation makes their guest account, never a GET
def new_conversation(request: HttpRequest) -> HttpResponse:
    conversation = start_conversation(request.user)  # type: ignore[arg-type]
    return redirect("conversation", conversation_id=conversation.id)


def _context(
    request: HttpRequest,
    conversation: Conversation,
    form: MessageForm | None = None,
    error: str = "",
    at: str | None = None,
) -> dict[str, object]:
    """The page's context; the URL's `at`, `open` and `tpl` say which branch shows, which
    explanations are open and whether template tokens show, so a reload or a copied link shows
    the same page. After a POST the branch is the conversation's (new) head."""
    source = get_source(conversation.source_id)
    at = at or (request.GET.get("at") if request.method == "GET" else None)
    view = thread_view(conversation, shown_leaf(conversation, at))
    prefixes = set(prefix_hashes(view.snapshot.token_ids)) if view.snapshot else set()
    shown, beside = split_open(opened(conversation, request.GET.get("open", ""), prefixes))
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
        "show_template": request.GET.get("tpl") == "1",
    }


@require_GET
def conversation(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conv = owned(request, conversation_id)
    template = "chat/conversation.html"
    if request.htmx:  # type: ignore[attr-defined]
        template += "#thread"
    return render(request, template, _context(request, conv))


@require_POST
def send(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conv = owned(request, conversation_id)
    form = MessageForm(request.POST)
    if form.is_valid():
        try:
            send_message(conv, form.cleaned_data["content"], after=request.POST.get("after"))
            form = MessageForm()
        except ReplyInProgress as exc:
            form.add_error("content", str(exc))
    conv.refresh_from_db()
    return render(request, "chat/conversation.html#chat", _context(request, conv, form))
