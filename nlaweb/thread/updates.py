"""What an answer to the conversation page changes outside the element it swaps: the token chips
whose tint or open outline changed, the panel's "N of M finished", the sections of another branch
that leave the panel, and the page's URL. The server renders them as htmx out-of-band swaps, so the
page's script never re-derives a tint, an outline or a link (the rules live in nlaweb/thread/view.py
and here, once)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django_htmx.http import replace_url

from nlaweb.chat.models import Conversation
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.with_source import split_open
from nlaweb.thread.panel import batch_status, opened
from nlaweb.thread.state import PageState
from nlaweb.thread.view import Chip, ThreadView, shown_leaf, thread_view


@dataclass(frozen=True)
class PageUpdate:
    state: PageState  # the page's state after the answer (its URL)
    chips: list[Chip] = field(default_factory=list)  # re-rendered in place (hx-swap-oob)
    open_prefixes: frozenset[str] = frozenset()  # the chips' open outline, as on a full render
    batch: str | None = None  # the panel's "2 of 3 finished"; None: leave it as it is
    dropped: list[str] = field(default_factory=list)  # sections (ids) of another branch


def all_chips(view: ThreadView) -> list[Chip]:
    message_chips = (c for m in view.messages for c in m.chips or [])
    return [*view.lead_chips, *message_chips, *view.tail_chips]


def shown_sections(
    conversation: Conversation, state: PageState, prefixes: set[str] | None
) -> list[Explanation]:
    """The rows `state` opens that are the panel's own sections (not columns beside one)."""
    return split_open(opened(conversation, state.open, prefixes))[0]


def panel_update(
    request: HttpRequest, conversation: Conversation, after: PageState, replaced: bool = False
) -> PageUpdate:
    """A panel answer (explain, refresh, close, cancel): the thread on screen stays; the chips of
    the sections open before or after are rendered again, and the URL opens `after`'s rows.
    `replaced`: the answer is the whole panel, which renders its own count."""
    before = PageState.of(request)
    view = thread_view(conversation, shown_leaf(conversation, before.at or None))
    prefixes = {c.prefix for c in all_chips(view)}
    was = shown_sections(conversation, before, prefixes)
    rows = opened(conversation, after.open, prefixes)
    now = split_open(rows)[0]
    leaf = view.leaf.pk if view.leaf else ""
    state = after.showing(leaf).opening(e.pk for e in rows)
    update = chips_update(view, {e.prefix_hash for e in was}, {e.prefix_hash for e in now}, state)
    return replace(update, batch=batch_status(now) if was and not replaced else None)


def chips_update(view: ThreadView, was: set[str], now: set[str], state: PageState) -> PageUpdate:
    """The chips of the token prefixes open before (`was`) or after (`now`) rendered again, with
    the outline on `now`'s (a share's answers use it as it is: they have no count)."""
    chips = [c for c in all_chips(view) if c.prefix in was | now]
    return PageUpdate(state=state, chips=chips, open_prefixes=frozenset(now))


def thread_update(request: HttpRequest, conversation: Conversation, after: PageState) -> PageUpdate:
    """A thread answer (send, edit, branch switch, a refresh), whose page context's `state` is
    `after`: the thread is rendered whole; the sections open before that `after` no longer opens
    (another branch's tokens) leave the panel."""
    kept = set(after.open)
    gone = shown_sections(conversation, PageState.of(request), None)
    return PageUpdate(state=after, dropped=[str(e.pk) for e in gone if str(e.pk) not in kept])


def respond(
    request: HttpRequest,
    response: HttpResponse,
    update: PageUpdate,
    path: str,
    **chip_context: object,
) -> HttpResponse:
    """Append the update's out-of-band swaps to `response` and set the page's URL to `path` with
    the update's state (htmx only). `chip_context`: a share's `readonly` and `pinned_position`."""
    if not getattr(request, "htmx", False):
        return response
    context = {"update": update, "open_prefixes": update.open_prefixes, **chip_context}
    response.write(render_to_string("thread/updates.html", context, request))
    return replace_url(response, update.state.url(path))


def conversation_path(conversation: Conversation) -> str:
    return reverse("conversation", args=[conversation.pk])


def thread_answer(
    request: HttpRequest, conversation: Conversation, template: str, context: dict[str, object]
) -> HttpResponse:
    """The thread (or chat) partial rendered from a page context, with its URL and the sections
    it closes."""
    after = state_of(context)
    response = render(request, template, context)
    update = thread_update(request, conversation, after)
    return respond(request, response, update, conversation_path(conversation))


def state_of(context: dict[str, object]) -> PageState:
    """The `state` of a page context (nlaweb.thread.page.page_context)."""
    state = context["state"]
    if not isinstance(state, PageState):
        raise TypeError("a page context's state is a PageState")
    return state


def page_redirect(conversation: Conversation, state: PageState) -> HttpResponse:
    """To the conversation page showing `state`: a plain form post's answer (no script), 303 so
    the browser asks for the page with GET (post/redirect/get)."""
    response = redirect(state.url(conversation_path(conversation)))
    response.status_code = 303
    return response


def panel_answer(
    request: HttpRequest,
    response: HttpResponse,
    conversation: Conversation,
    after: PageState | None = None,
    replaced: bool = False,
) -> HttpResponse:
    """A panel answer with its chips, count and URL (`after`: default, the page's state as it is)."""
    after = after if after is not None else PageState.of(request)
    update = panel_update(request, conversation, after, replaced)
    return respond(request, response, update, conversation_path(conversation))
