"""The request type of views behind django-htmx's HtmxMiddleware (settings.MIDDLEWARE): it carries
`request.htmx`, so a view can ask `if request.htmx:` without a type: ignore; and the one way a
refused htmx request tells the page why (HX-Trigger)."""

from __future__ import annotations

from typing import TypeVar

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django_htmx.http import trigger_client_event
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


#: The event a refused htmx request raises on the page (HX-Trigger): static/nlaweb/ws.js shows its
#: `message` in the page's banner and, with `reread`, reads the thread again.
PROBLEM_EVENT = "nlaweb:problem"


Response = TypeVar("Response", bound=HttpResponseBase)


def with_problem(
    request: HttpRequest, response: Response, sentence: str, reread: bool = False
) -> Response:
    """Say `sentence` in the page's banner when htmx sent `request` (htmx swaps no error answer)."""
    if request.headers.get("HX-Request") != "true":
        return response
    return trigger_client_event(response, PROBLEM_EVENT, {"message": sentence, "reread": reread})
