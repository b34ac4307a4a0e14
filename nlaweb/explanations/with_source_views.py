"""Explain with… another NLA source of the same target: the list of sources (htmx GET) and the
token's explanations by both side by side (htmx POST). Each view: authorize, parse, call the domain
(nlaweb.explanations.with_source), render."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from nlaweb.explanations import with_source
from nlaweb.explanations.owned import owned_explanation
from nlaweb.explanations.request import ExplainRejected
from nlaweb.thread.state import PageState
from nlaweb.thread.updates import panel_answer
from workers.contracts import STAGES

TEMPLATE = "explanations/with_source.html"


@require_GET
def sources(request: HttpRequest, explanation_id: str) -> HttpResponse:
    """The other sources of this explanation's target model, to explain the token with."""
    explanation = owned_explanation(request, explanation_id)
    others = with_source.other_sources(explanation.source_id)
    return render(request, f"{TEMPLATE}#list", {"e": explanation, "others": others})


@require_POST
def explain_with(request: HttpRequest, explanation_id: str) -> HttpResponse:
    """The token explained by the source the form names, beside this explanation."""
    explanation = owned_explanation(request, explanation_id)
    source_id = request.POST.get("source", "")
    try:
        theirs = with_source.explain_with(explanation, source_id)
    except ExplainRejected as exc:
        return render(request, f"{TEMPLATE}#list", {"e": explanation, "error": str(exc)})
    context = {
        "view": with_source.side_by_side(explanation, [theirs]),
        "stages": STAGES[:-1],
    }
    response = render(request, f"{TEMPLATE}#side", context)
    after = PageState.of(request).adding([theirs.pk])
    return panel_answer(request, response, explanation.snapshot.conversation, after)
