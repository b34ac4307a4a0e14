"""Explain tokens (htmx POST from a token chip or a selection of chips) and re-render one
explanation's section of the panel."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from nlaweb.chat.models import Snapshot
from nlaweb.explanations.forms import ExplainForm
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected, request_explanations
from nlaweb.explanations.sections import panel_context


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
        return _panel(request, [], str(form.errors["position"][0]))
    try:
        explanations = request_explanations(snapshot, form.cleaned_data["position"])
    except ExplainRejected as exc:
        return _panel(request, [], str(exc))
    return _panel(request, explanations)


@require_GET
def panel(request: HttpRequest, explanation_id: str) -> HttpResponse:
    """One explanation's section alone, which the page swaps in place of the one it shows."""
    explanation = get_object_or_404(
        Explanation.objects.select_related("snapshot"),
        pk=explanation_id,
        snapshot__conversation__owner_id=request.user.pk,
    )
    return _panel(request, [explanation], template="explanations/panel.html#sections")
