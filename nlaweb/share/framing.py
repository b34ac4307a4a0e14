"""Who may put a page in a frame: nobody, except for the views marked `embeddable` (a share's
embed). X-Frame-Options (Django's middleware, DENY) and CSP `frame-ancestors` say the same."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.clickjacking import xframe_options_exempt

CSP = "Content-Security-Policy"


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
            response[CSP] = "frame-ancestors *"
        elif CSP not in response:
            response[CSP] = "frame-ancestors 'none'"
        return response
