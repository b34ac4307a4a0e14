"""Give every visitor an account: a first visit creates a guest user and logs it in, so each
conversation has an owner and the same permission rules hold for guests and registered users."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.contrib.auth import get_user_model, login
from django.http import HttpRequest, HttpResponse

_SKIP_PREFIXES = ("/static/", "/admin/", "/api/", "/healthz")


class GuestUserMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated and not request.path.startswith(_SKIP_PREFIXES):
            user = get_user_model().objects.create_user(username=f"guest-{secrets.token_hex(6)}")
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return self.get_response(request)
