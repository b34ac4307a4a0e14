"""Share links, the read-only shared page and its embed, the owner's list of links, export and
import. Each view: authorize, parse, call one domain function, render."""

from __future__ import annotations

from typing import NamedTuple

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from nlaweb.accounts.guests import user_or_new_guest
from nlaweb.chat.models import Conversation
from nlaweb.share.document import MAX_IMPORT_BYTES
from nlaweb.share.forms import ImportForm, ShareForm, pin_options, pin_value
from nlaweb.share.framing import embeddable
from nlaweb.share.models import Share
from nlaweb.share.sharing import (
    ShareGone,
    ShareRejected,
    count_view,
    create_share,
    finished_explanations,
    frozen_explanations,
    live_share,
    owned_share,
    page_snapshot,
    revoke_share,
    shared_explanation,
    shared_page,
    shares_of,
    suggested_pin,
)
from nlaweb.share.transfer import (
    ImportRejected,
    export_conversation,
    export_json,
    fork_share,
    import_document,
    parse_document,
)
from nlaweb.thread.panel import panel_context
from nlaweb.thread.state import PageState, parse_ids
from nlaweb.thread.updates import chips_update, respond


def _owned(request: HttpRequest, conversation_id: str) -> Conversation:
    """The conversation if the user owns it; 404 otherwise (no hint that it exists)."""
    return get_object_or_404(Conversation, pk=conversation_id, owner_id=request.user.pk)


def _link(request: HttpRequest, share: Share) -> str:
    return request.build_absolute_uri(reverse("share_view", args=[share.id]))


# -- the owner ------------------------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
def share_new(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    at = request.POST.get("at") or request.GET.get("at") or None  # the branch the page showed
    snapshot = page_snapshot(conversation, at)
    rows = finished_explanations(snapshot) if snapshot else {}
    pinned = suggested_pin(conversation, rows, request.GET.get("open", ""))
    initial = {"pin": pin_value(pinned) if pinned is not None else ""}
    form = ShareForm(request.POST or None, explanations=rows, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            pin, comment = form.cleaned_data["pin"], form.cleaned_data["comment"]
            share = create_share(conversation, pin, comment, at)
        except ShareRejected as exc:
            form.add_error(None, str(exc))
        else:
            return redirect(f"{reverse('shares')}?created={share.id}")
    context = {
        "conversation": conversation,
        "snapshot": snapshot,
        "at": at or "",
        "options": pin_options(rows),
        "form": form,
    }
    return render(request, "share/new.html", context, status=400 if form.errors else 200)


class ShareRow(NamedTuple):
    share: Share
    link: str


@require_GET
def shares(request: HttpRequest) -> HttpResponse:
    mine = shares_of(request.user.pk) if request.user.is_authenticated else []
    rows = [ShareRow(s, _link(request, s)) for s in mine]
    created = next((r for r in rows if r.share.id == request.GET.get("created")), None)
    return render(request, "share/list.html", {"rows": rows, "created": created})


@require_POST
def revoke(request: HttpRequest, share_id: str) -> HttpResponse:
    share = owned_share(request.user.pk, share_id)
    if share is None:
        raise Http404
    revoke_share(share)
    return redirect("shares")


@require_GET
def export(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    response = HttpResponse(export_json(export_conversation(conversation)), "application/json")
    name = slugify(conversation.title)[:60] or "conversation"
    response["Content-Disposition"] = f'attachment; filename="nlaweb-{name}.json"'
    return response


@require_http_methods(["GET", "POST"])
def import_conversation(request: HttpRequest) -> HttpResponse:
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            document = parse_document(form.cleaned_data["file"])
            conversation = import_document(user_or_new_guest(request), document)
        except ImportRejected as exc:
            form.add_error("file", str(exc))
        else:
            return redirect("conversation", conversation_id=conversation.id)
    context = {"form": form, "max_mb": MAX_IMPORT_BYTES // 1024 // 1024}
    return render(request, "share/import.html", context, status=400 if form.errors else 200)


# -- anyone with the link -------------------------------------------------------------------------
def _gone(request: HttpRequest, gone: ShareGone, template: str) -> HttpResponse:
    if not gone.revoked:
        raise Http404
    context = {"message": str(gone), "is_owner": gone.owner_id == request.user.pk}
    return render(request, template, context, status=404)


def _page(request: HttpRequest, share_id: str, template: str, gone: str) -> HttpResponse:
    try:
        share = live_share(share_id)
    except ShareGone as exc:
        return _gone(request, exc, gone)
    count_view(share)
    page = shared_page(share, request.GET.get("open", ""))
    context = {
        "page": page,
        "view": page.thread,
        "panel": panel_context(page.open, scope=page.explained),
        "open_prefixes": page.open_prefixes,
        "pinned_position": share.pinned_position,
        "reply_max_tokens": settings.REPLY_MAX_NEW_TOKENS,
        "link": _link(request, share),
        "is_owner": share.conversation.owner_id == request.user.pk,
    }
    return render(request, template, context)


@require_GET
def share_view(request: HttpRequest, share_id: str) -> HttpResponse:
    return _page(request, share_id, "share/view.html", "share/revoked.html")


@require_GET
@embeddable
def share_embed(request: HttpRequest, share_id: str) -> HttpResponse:
    return _page(request, share_id, "share/embed.html", "share/embed_revoked.html")


@require_GET
def share_panel(request: HttpRequest, share_id: str, position: int) -> HttpResponse:
    """The panel of one explained token of a share (a reader's click); no other token has one."""
    try:
        share = live_share(share_id)
    except ShareGone:
        raise Http404 from None
    explanation = shared_explanation(share, position)
    if explanation is None:
        raise Http404
    frozen = frozen_explanations(share)  # the generic flag counts the link's rows only
    context = {
        **panel_context([explanation], scope=frozen),
        "readonly": True,  # no owner's actions
        "share_id": share.id,
    }
    response = render(request, "explanations/panel.html", context)
    return _share_answer(request, share, response, PageState().opening([explanation.pk]))


@require_GET
def share_close(request: HttpRequest, share_id: str) -> HttpResponse:
    """A reader closed the open explanation: its chip without the outline, the URL without it."""
    try:
        share = live_share(share_id)
    except ShareGone:
        raise Http404 from None
    after = PageState.of(request).closing(parse_ids(request.GET.get("ids", "")))
    return _share_answer(request, share, HttpResponse(""), after)


def _share_answer(
    request: HttpRequest, share: Share, response: HttpResponse, after: PageState
) -> HttpResponse:
    """`response` with the chips whose outline moved and the URL of the page (view or embed)."""
    before = shared_page(share, ",".join(PageState.of(request).open))
    by_id = {str(e.pk): e for e in before.explained.values()}
    now = {by_id[i].prefix_hash for i in after.open if i in by_id}
    update = chips_update(before.thread, before.open_prefixes, now, after)
    embed = reverse("share_embed", args=[share.id])
    htmx = getattr(request, "htmx", None)
    current = (htmx.current_url_abs_path if htmx else None) or ""
    path = embed if current.split("?")[0] == embed else reverse("share_view", args=[share.id])
    return respond(
        request, response, update, path, readonly=True, pinned_position=share.pinned_position
    )


@require_POST
def share_copy(request: HttpRequest, share_id: str) -> HttpResponse:
    try:
        share = live_share(share_id)
    except ShareGone as exc:
        return _gone(request, exc, "share/revoked.html")
    conversation = fork_share(share, user_or_new_guest(request))
    return redirect("conversation", conversation_id=conversation.id)
