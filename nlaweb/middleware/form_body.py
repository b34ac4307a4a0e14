"""A POST body Django cannot read as a form (not UTF-8, a charset that is no text encoding, a broken
multipart, too big, too many fields) is answered here with a 400 (413 when too big) and one sentence.

Why here and not in Django's own 400 handler: `request.POST` raises BadRequest for such a body, but the
400 view is wrapped in `requires_csrf_token`, whose check reads `request.POST` again, raises again
inside the handler, and the person gets a bare 500. The CSRF middleware reads the form of every POST,
so this middleware, which runs before any view and before that check, reads it first."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError

log = logging.getLogger(__name__)

#: What reading a form can raise besides RequestDataTooBig: Django's BadRequest (a urlencoded body
#: that is not UTF-8), SuspiciousOperation (too many fields or files), a broken multipart, and a
#: declared charset that is unknown or no text encoding (LookupError, UnicodeError).
UNREADABLE = (BadRequest, SuspiciousOperation, MultiPartParserError, LookupError, UnicodeError)
UNREADABLE_SENTENCE = (
    "This form could not be read: send it as UTF-8 "
    "(application/x-www-form-urlencoded or multipart/form-data)."
)


class FormBodyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            refusal = _refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the form reads; else the 4xx that says why (the body is never read twice)."""
    try:
        request.POST  # noqa: B018  (parsing is the point)
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _text(413, f"This form is larger than {limit} bytes; send a shorter one.")
    except UNREADABLE as exc:
        log.warning("unreadable form body on %s: %s", request.path, exc)
        return _text(400, UNREADABLE_SENTENCE)
    return None


def _text(status: int, sentence: str) -> HttpResponse:
    return HttpResponse(sentence, status=status, content_type="text/plain; charset=utf-8")
