"""A POST body Django cannot read as a form (not UTF-8, a charset that is no text encoding, a broken
multipart, too big, too many fields) is answered here with a 400 (413 when too big) and one sentence.

Bytes that are not UTF-8 get one answer whatever carries them: a form (raw or percent-escaped;
Django would read the first as Latin-1 and the second with U+FFFD, silently) and a JSON body (the
API's, an htmx request's) alike get `NOT_UTF8` with a 400, as the JSON `{"error": …}` that htmx's
banner reads, the API's `{"error": "bad_request", "detail": …}`, or plain text for a plain form.

Why here and not in Django's own 400 handler: `request.POST` raises BadRequest for such a body, but the
400 view is wrapped in `requires_csrf_token`, whose check reads `request.POST` again, raises again
inside the handler, and the person gets a bare 500. The CSRF middleware reads the form of every POST,
so this middleware, which runs before any view and before that check, reads it first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError

from nlaweb.middleware.htmx import with_problem

log = logging.getLogger(__name__)

#: What reading a form can raise besides RequestDataTooBig: Django's BadRequest (a urlencoded body
#: that is not UTF-8), SuspiciousOperation (too many fields or files), a broken multipart, and a
#: declared charset that is unknown or no text encoding (LookupError, UnicodeError).
UNREADABLE = (BadRequest, SuspiciousOperation, MultiPartParserError, LookupError, UnicodeError)
UNREADABLE_SENTENCE = (
    "This form could not be read: send it as UTF-8 "
    "(application/x-www-form-urlencoded or multipart/form-data)."
)
NOT_UTF8 = "This request's text is not UTF-8; send it encoded as UTF-8."


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
    if _textual(request.content_type) and not _utf8(request):
        log.warning("body that is not UTF-8 on %s", request.path)
        return _answer(request, 400, NOT_UTF8)
    try:
        request.POST  # noqa: B018  (parsing is the point)
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _answer(request, 413, f"This form is larger than {limit} bytes; send a shorter one.")
    except UNREADABLE as exc:
        log.warning("unreadable form body on %s: %s", request.path, exc)
        return _answer(request, 400, UNREADABLE_SENTENCE)
    return None


def _textual(content_type: str | None) -> bool:
    """Bodies whose bytes are text as a whole: a urlencoded form, JSON."""
    kind = (content_type or "").lower()
    return kind == URLENCODED or kind == "application/json" or kind.endswith("+json")


URLENCODED = "application/x-www-form-urlencoded"


def _utf8(request: HttpRequest) -> bool:
    """Whether the body, and for a form each percent-escaped name and value, is UTF-8 (a body too
    big to read is the size check's to answer)."""
    try:
        body = request.body
    except RequestDataTooBig:
        return True
    try:
        body.decode("utf-8")
        if request.content_type == URLENCODED:
            for part in body.replace(b"=", b"&").split(b"&"):
                unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _answer(request: HttpRequest, status: int, sentence: str) -> HttpResponse:
    """The sentence in the shape the client reads: the API's error body, htmx's and JSON clients'
    `{"error": …}`, else plain text."""
    if request.path.startswith("/api/"):
        code = "payload_too_large" if status == 413 else "bad_request"
        return JsonResponse({"error": code, "detail": sentence}, status=status)
    json_body = _textual(request.content_type) and request.content_type != URLENCODED
    if request.headers.get("HX-Request") == "true" or json_body or _accepts_json(request):
        return with_problem(request, JsonResponse({"error": sentence}, status=status), sentence)
    return HttpResponse(sentence, status=status, content_type="text/plain; charset=utf-8")


def _accepts_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")
