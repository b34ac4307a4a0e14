"""Explain tokens (htmx POST from a token chip or a selection of chips) and re-render one
explanation's section of the panel."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.html import escape
from django.views.decorators.http import require_GET, require_POST

from nlaweb.chat.models import Snapshot
from nlaweb.chat.views import owned
from nlaweb.explanations import compare, runs
from nlaweb.explanations.forms import ExplainForm
from nlaweb.explanations.models import ExplainRun, Explanation
from nlaweb.explanations.owned import owned_explanation, owned_message
from nlaweb.explanations.request import ExplainRejected, request_explanations
from nlaweb.thread.page import page_context
from nlaweb.thread.panel import panel_context, sections
from nlaweb.thread.state import PageState, parse_ids
from nlaweb.thread.updates import page_redirect, panel_answer, state_of, thread_answer


def _panel(
    request: HttpRequest, explanations: list[Explanation], error: str = "", template: str = ""
) -> HttpResponse:
    return render(
        request, template or "explanations/panel.html", panel_context(explanations, error)
    )


@require_POST
def explain(request: HttpRequest, conversation_id: str, snapshot_id: str) -> HttpResponse:
    snapshot = get_object_or_404(
        Snapshot,
        pk=snapshot_id,
        conversation_id=conversation_id,
        conversation__owner_id=request.user.pk,
    )
    form = ExplainForm(request.POST)
    if not form.is_valid():
        return _opened(request, snapshot, [], str(form.errors["position"][0]))
    try:
        explanations = request_explanations(snapshot, form.cleaned_data["position"])
    except ExplainRejected as exc:
        return _opened(request, snapshot, [], str(exc))
    return _opened(request, snapshot, explanations)


def _opened(
    request: HttpRequest, snapshot: Snapshot, rows: list[Explanation], error: str = ""
) -> HttpResponse:
    """The panel of `rows` (the panel is replaced), its chips and URL. A plain form post (no
    script) goes to the page with them open, or shows the page with the error in the panel."""
    conversation = snapshot.conversation
    after = PageState.of(request).opening(e.pk for e in rows)
    if getattr(request, "htmx", False):
        response = _panel(request, rows, error)
        return panel_answer(request, response, conversation, after, replaced=True)
    if error:
        context = {**page_context(request, conversation), "panel": panel_context([], error)}
        return render(request, "chat/conversation.html", context, status=400)
    return page_redirect(conversation, after.showing(snapshot.leaf_id))


@require_GET
def panel(request: HttpRequest, explanation_id: str) -> HttpResponse:
    """One explanation's section alone, which the page swaps in place of the one it shows, with
    its token's chip (tint) and the panel's count."""
    explanation = owned_explanation(request, explanation_id)
    response = _section(request, explanation)
    return panel_answer(request, response, explanation.snapshot.conversation)


def _section(request: HttpRequest, explanation: Explanation) -> HttpResponse:
    context = {**panel_context([explanation]), "nested": request.GET.get("nested") == "1"}
    return render(request, "explanations/panel.html#sections", context)


@require_GET
def close(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """Close open explanations (`?ids=`): the page drops the section; the answer is its token's
    chip without the outline and the URL without the ids."""
    conversation = owned(request, conversation_id)
    after = PageState.of(request).closing(parse_ids(request.GET.get("ids", "")))
    return panel_answer(request, HttpResponse(""), conversation, after)


@require_GET
def compare_branches(request: HttpRequest, explanation_id: str) -> HttpResponse:
    """The other branches this token can be compared with."""
    explanation = owned_explanation(request, explanation_id)
    context = {"e": explanation, "branches": compare.branches(explanation)}
    return render(request, "explanations/compare.html#branches", context)


@require_POST
def compare_with(request: HttpRequest, explanation_id: str, snapshot_id: str) -> HttpResponse:
    """Side by side with the aligned token of another branch, or its tokens to pick one from."""
    explanation = owned_explanation(request, explanation_id)
    other = get_object_or_404(
        Snapshot, pk=snapshot_id, conversation_id=explanation.snapshot.conversation_id
    )
    form = ExplainForm(request.POST)
    picked = form.cleaned_data["position"] if form.is_valid() else []
    position = picked[0] if picked else compare.aligned_position(explanation, other)
    if position is None:
        context = {
            "e": explanation,
            "other": other,
            "tokens": compare.pick_tokens(explanation, other),
        }
        return render(request, "explanations/compare.html#picker", context)
    try:
        theirs = compare.compared(explanation, other, position)
    except ExplainRejected as exc:
        return render(request, "explanations/compare.html#picker", {"error": str(exc)})
    context = {
        **panel_context([theirs]),
        "e": explanation,
        "mine_sections": sections([explanation]),
        "nested": True,
    }
    return render(request, "explanations/compare.html#side", context)


@require_POST
def cancel_explanation(request: HttpRequest, explanation_id: str) -> HttpResponse:
    """Stop a waiting or running explanation; answers with its section."""
    explanation = owned_explanation(request, explanation_id)
    try:
        runs.cancel(explanation)
    except ExplainRejected as exc:
        return _panel(request, [], str(exc))
    response = _section(request, explanation)
    return panel_answer(request, response, explanation.snapshot.conversation)


@require_POST
def explain_message(
    request: HttpRequest, conversation_id: str, snapshot_id: str, message_id: str
) -> HttpResponse:
    """Explain every word of one message in the background; answers with the thread."""
    snapshot, message = owned_message(request, conversation_id, snapshot_id, message_id)
    try:
        runs.start_run(snapshot, message)
    except ExplainRejected as exc:
        return HttpResponse(f'<p class="error" role="alert">{escape(str(exc))}</p>')
    return _thread(request, snapshot)


@require_POST
def cancel_run(request: HttpRequest, run_id: str) -> HttpResponse:
    run = get_object_or_404(
        ExplainRun.objects.select_related("snapshot"),
        pk=run_id,
        snapshot__conversation__owner_id=request.user.pk,
    )
    runs.cancel_run(run)
    return _thread(request, run.snapshot)


def _thread(request: HttpRequest, snapshot: Snapshot) -> HttpResponse:
    """The thread of the branch the snapshot ends, as the conversation page renders it; a plain
    form post (no script) goes to the page."""
    conversation = snapshot.conversation
    context = page_context(request, conversation, at=str(snapshot.leaf_id))
    if not getattr(request, "htmx", False):
        return page_redirect(conversation, state_of(context))
    return thread_answer(request, conversation, "chat/conversation.html#thread", context)
