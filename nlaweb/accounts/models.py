"""A guest is an ordinary user with a mark: made for a visitor on their first state-changing action,
it owns conversations under the same rules as everyone; signing up removes the mark in place."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Guest(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="guest"
    )

    def __str__(self) -> str:
        return f"guest {self.user_id}"


class AuthAttempt(models.Model):
    """A failed log-in or a sign-up attempt, kept for an hour: the rate limit counts these
    (nlaweb/accounts/throttle.py), per account and per client address, in every web process."""

    class Kind(models.TextChoices):
        LOGIN = "login", "failed log-in"
        SIGNUP = "signup", "sign-up attempt"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    account = models.CharField(max_length=150, db_index=True)  # the username typed, lowercased
    address = models.CharField(max_length=64, db_index=True)  # REMOTE_ADDR
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.account!r} from {self.address} at {self.at:%H:%M:%S}"
