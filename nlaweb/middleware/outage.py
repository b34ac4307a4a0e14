"""A database or a job queue that is down answers 503 with a sentence, never a bare 500: an HTML
page, or JSON (`{"error": …}`) for htmx, API and JSON requests.

The database is checked before anything reads it (sessions, the guest account), so an outage costs a
connection attempt (DATABASE_CONNECT_TIMEOUT_S at most), and a view that loses it half-way answers
the same. A job the broker refused (nlaweb.jobs.broker.QueueUnavailable) says what was saved."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from nlaweb.jobs.broker import QueueUnavailable
from nlaweb.middleware.htmx import with_problem

log = logging.getLogger(__name__)

DATABASE_DOWN = "The database is not reachable right now; please try again in a minute."
RETRY_AFTER_S = 30


class OutageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            connection.ensure_connection()
        except DatabaseError as error:
            log.warning("%s %s: database down: %r", request.method, request.path, error)
            return unavailable(request, DATABASE_DOWN)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, QueueUnavailable):
            return unavailable(request, exception.message)
        if isinstance(exception, OperationalError | InterfaceError):
            log.warning("%s %s: database lost: %r", request.method, request.path, exception)
            return unavailable(request, DATABASE_DOWN)
        return None


def wants_json(request: HttpRequest) -> bool:
    """htmx swaps, API calls and clients that ask for JSON get JSON."""
    return (
        request.headers.get("HX-Request") == "true"
        or "application/json" in request.headers.get("Accept", "")
        or request.path.startswith("/api/")
    )


def unavailable(request: HttpRequest, sentence: str) -> HttpResponse:
    """503 with `sentence`; rendered without the request (its context would read the database)."""
    response: HttpResponse
    if wants_json(request):
        response = JsonResponse({"error": sentence}, status=503)
    else:
        page = render_to_string("unavailable.html", {"sentence": sentence})
        response = HttpResponse(page, status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    # What was asked may have been saved (a click or a message whose job could not be sent yet):
    # the page reads its thread again.
    return with_problem(request, response, sentence, reread=True)
