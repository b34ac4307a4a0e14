"""The request type of views behind django-htmx's HtmxMiddleware (settings.MIDDLEWARE): it carries
`request.htmx`, so a view can ask `if request.htmx:` without a type: ignore."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
