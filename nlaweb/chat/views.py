"""Chat pages. Each view: authorize, parse, call one domain function, render."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST, require_safe

from nlaweb.accounts.guests import guest_on_post
from nlaweb.chat.conversation import ReplyInProgress, send_message, start_conversation
from nlaweb.chat.forms import MessageForm
from nlaweb.chat.models import Conversation
from nlaweb.middleware.htmx import HtmxHttpRequest
from nlaweb.thread.page import page_context


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


@require_GET
def conversation(request: HtmxHttpRequest, conversation_id: str) -> HttpResponse:
    conv = owned(request, conversation_id)
    template = "chat/conversation.html"
    if request.htmx:
        template += "#thread"
    return render(request, template, page_context(request, conv))


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
    return render(request, "chat/conversation.html#chat", page_context(request, conv, form))
