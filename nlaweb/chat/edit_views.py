"""Edit, regenerate, continue and switch branches (htmx POSTs that answer with the chat partial),
and the in-place editor of one message. Each: authorize, parse, call one domain function, render."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from nlaweb.chat import edit
from nlaweb.chat.forms import BranchForm, MessageForm, RegenerateForm
from nlaweb.chat.models import Conversation, Message
from nlaweb.chat.views import owned
from nlaweb.thread.page import page_context
from nlaweb.thread.updates import page_redirect, state_of, thread_answer


def _chat(request: HttpRequest, conversation: Conversation, error: str = "") -> HttpResponse:
    """The chat partial after a change, with the page's URL; a plain form post (no script) goes to
    the page, or shows it with the error."""
    conversation.refresh_from_db()
    context = page_context(request, conversation, error=error)
    htmx = bool(getattr(request, "htmx", False))
    if not htmx and not error:
        return page_redirect(conversation, state_of(context))
    template = "chat/conversation.html" + ("#chat" if htmx else "")
    return thread_answer(request, conversation, template, context)


def _first_error(form: forms.Form) -> str:
    return next(str(errors[0]) for errors in form.errors.values())


def _change(
    request: HttpRequest,
    conversation_id: str,
    form: forms.Form,
    change: Callable[[Conversation], object],
) -> HttpResponse:
    conversation = owned(request, conversation_id)
    if not form.is_valid():
        return _chat(request, conversation, _first_error(form))
    try:
        change(conversation)
    except edit.EditRejected as rejected:
        return _chat(request, conversation, str(rejected))
    return _chat(request, conversation)


@require_GET
def editor(request: HttpRequest, conversation_id: str, message_id: str) -> HttpResponse:
    """The message as a textarea holding its text (Enter saves, Escape cancels)."""
    conversation = owned(request, conversation_id)
    message = get_object_or_404(Message, pk=message_id, conversation=conversation)
    form = MessageForm(initial={"content": message.content})
    context = {"conversation": conversation, "message": message, "form": form}
    return render(request, "chat/editor.html", context)


@require_POST
def save_edit(request: HttpRequest, conversation_id: str, message_id: str) -> HttpResponse:
    form = MessageForm(request.POST)
    return _change(
        request,
        conversation_id,
        form,
        lambda c: edit.edit_message(c, message_id, form.cleaned_data["content"]),
    )


@require_POST
def regenerate(request: HttpRequest, conversation_id: str, message_id: str) -> HttpResponse:
    form = RegenerateForm(request.POST)
    return _change(
        request,
        conversation_id,
        form,
        lambda c: edit.regenerate(
            c, message_id, form.cleaned_data["temperature"], form.cleaned_data["seed"]
        ),
    )


@require_POST
def continue_reply(request: HttpRequest, conversation_id: str, message_id: str) -> HttpResponse:
    form = forms.Form({})  # nothing to parse but the ids in the URL
    return _change(request, conversation_id, form, lambda c: edit.continue_reply(c, message_id))


@require_POST
def switch_branch(request: HttpRequest, conversation_id: str) -> HttpResponse:
    form = BranchForm(request.POST)
    return _change(
        request,
        conversation_id,
        form,
        lambda c: edit.switch_branch(c, str(form.cleaned_data["to"])),
    )
