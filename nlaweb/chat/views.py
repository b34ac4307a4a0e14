"""Chat pages. Each view: authorize, parse, call one domain function, render."""

from __future__ import annotations

from dataclasses import replace

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST, require_safe

from nlaweb.accounts.guests import guest_on_post
from nlaweb.chat.conversation import ReplyInProgress, send_message, start_conversation
from nlaweb.chat.forms import MessageForm
from nlaweb.chat.models import Conversation
from nlaweb.middleware.htmx import HtmxHttpRequest
from nlaweb.thread.page import page_context
from nlaweb.thread.state import PageState, answer_with_url
from nlaweb.thread.updates import page_redirect, state_of, thread_answer


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
    if request.htmx:  # the thread read again (a reply finished, a run moved on)
        return thread_answer(
            request, conv, "chat/conversation.html#thread", page_context(request, conv)
        )
    context = page_context(request, conv)
    shown = state_of(context)
    if PageState.of(request).open != shown.open:  # a link naming rows this branch does not show
        return redirect(shown.url(request.path))
    return render(request, "chat/conversation.html", context)


@require_GET
def page_state(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """The template-token toggle (`?tpl=1` or not): only the page's URL changes."""
    conv = owned(request, conversation_id)
    after = replace(PageState.of(request), tpl=request.GET.get("tpl") == "1")
    return answer_with_url(
        request, HttpResponse(""), after, reverse("conversation", args=[conv.pk])
    )


@require_POST
def send(request: HtmxHttpRequest, conversation_id: str) -> HttpResponse:
    conv = owned(request, conversation_id)
    form = MessageForm(request.POST)
    if form.is_valid():
        try:
            send_message(conv, form.cleaned_data["content"], after=request.POST.get("after"))
            form = MessageForm()
        except ReplyInProgress as exc:
            form.add_error("content", str(exc))
    conv.refresh_from_db()
    context = page_context(request, conv, form)
    if not request.htmx and not form.errors:
        return page_redirect(conv, state_of(context))
    template = "chat/conversation.html" + ("#chat" if request.htmx else "")
    return thread_answer(request, conv, template, context)
