"""Template context for the header's account links."""

from __future__ import annotations

from django.http import HttpRequest

from nlaweb.accounts.guests import is_guest


def account(request: HttpRequest) -> dict[str, bool]:
    return {"is_guest": is_guest(request.user)}
