"""Log-in and sign-up, rate-limited per account and per address: within any hour, at most
AUTH_LIMIT_PER_ACCOUNT failed log-ins or sign-up attempts name one username, and at most
AUTH_LIMIT_PER_ADDRESS come from one client address (REMOTE_ADDR: behind the TLS proxy, with
HTTPS=1, daphne takes it from X-Forwarded-For). The attempts are rows, so every web process counts
the same ones; a refused attempt is not recorded, so a locked address frees itself an hour after
its attempts."""

from __future__ import annotations

import math
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from nlaweb.accounts.models import AuthAttempt

WINDOW = timedelta(hours=1)
_WHAT = {AuthAttempt.Kind.LOGIN: "failed log-ins", AuthAttempt.Kind.SIGNUP: "sign-up attempts"}


def address_of(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown")[:64]


def refusal(kind: AuthAttempt.Kind, account: str, address: str) -> str | None:
    """The sentence that refuses one more attempt, or None while both counts are under their limit."""
    recent = AuthAttempt.objects.filter(kind=kind, at__gte=timezone.now() - WINDOW)
    checks = (
        ("from your address", recent.filter(address=address), settings.AUTH_LIMIT_PER_ADDRESS),
        (
            "for this account",
            recent.filter(account=account.lower()),
            settings.AUTH_LIMIT_PER_ACCOUNT,
        ),
    )
    for whose, attempts, limit in checks:
        if (whose == "for this account" and not account) or attempts.count() < limit:
            continue
        oldest = attempts.order_by("at").values_list("at", flat=True)[0]
        minutes = max(1, math.ceil((oldest + WINDOW - timezone.now()).total_seconds() / 60))
        return f"Too many {_WHAT[kind]} {whose} in the last hour: try again in {minutes} min."
    return None


def record(kind: AuthAttempt.Kind, account: str, address: str) -> None:
    AuthAttempt.objects.filter(at__lt=timezone.now() - WINDOW).delete()
    AuthAttempt.objects.create(kind=kind, account=account.lower()[:150], address=address)
