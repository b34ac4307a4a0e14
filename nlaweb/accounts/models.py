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
