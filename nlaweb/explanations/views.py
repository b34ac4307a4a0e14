"""Explain a token (htmx POST from a token chip) and re-render an explanation panel."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from nlaweb.chat.forms import ExplainForm
from nlaweb.chat.models import Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainRejected, request_explanation
from nlaweb.sources import build_figures, get_source
from workers.contracts import STAGES


def _panel(request: HttpRequest, explanation: Explanation | None, error: str = "") -> HttpResponse:
    source_id = explanation.source_id if explanation else ""
    return render(
        request,
        "explanations/panel.html",
        {
            "e": explanation,
            "error": error,
            "source": get_source(source_id),
            "figures": build_figures(source_id) if explanation else {},
            "stages": STAGES[:-1],
            "stage_index": _stage_index(explanation),
        },
    )


def _stage_index(explanation: Explanation | None) -> int:
    """Where the stored stage is in STAGES, so a reload mid-job marks the same step as the frames do."""
    stage = explanation.stage if explanation else ""
    return STAGES.index(stage) if stage in STAGES else 0


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
        return _panel(request, None, str(form.errors["position"][0]))
    try:
        explanation = request_explanation(snapshot, form.cleaned_data["position"])
    except ExplainRejected as exc:
        return _panel(request, None, str(exc))
    return _panel(request, explanation)


@require_GET
def panel(request: HttpRequest, explanation_id: str) -> HttpResponse:
    explanation = get_object_or_404(
        Explanation.objects.select_related("snapshot"),
        pk=explanation_id,
        snapshot__conversation__owner_id=request.user.pk,
    )
    return _panel(request, explanation)
