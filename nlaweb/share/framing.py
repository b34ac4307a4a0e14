"""Who may put a page in a frame: nobody, except for the views marked `embeddable` (a share's
embed). X-Frame-Options (Django's middleware, DENY) and CSP `frame-ancestors` say the same: the
site's policy (settings.CONTENT_SECURITY_POLICY, written by django-csp's middleware, which runs
after this one) has `frame-ancestors 'none'`; an embeddable response replaces it with `*`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.clickjacking import xframe_options_exempt

CSP = "Content-Security-Policy"
#: What an embeddable response changes in the site's policy (django-csp's `_csp_replace`).
ANY_FRAME = {"frame-ancestors": ["*"]}


def embeddable(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let any site frame this view's responses."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.embeddable = True  # type: ignore[attr-defined]
        return response

    return xframe_options_exempt(wrapped)


class FrameAncestorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if getattr(response, "embeddable", False):
            response._csp_replace = ANY_FRAME  # type: ignore[attr-defined]
        return response
