from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from nlaweb.accounts.guests import GUEST_PREFIX


class SignupForm(UserCreationForm):  # type: ignore[type-arg]
    """Django's user creation form (and its password validators); guest names are reserved."""

    def clean_username(self) -> str:
        username: str = super().clean_username() or ""
        if username.lower().startswith(GUEST_PREFIX):
            raise forms.ValidationError(
                f"Usernames starting with “{GUEST_PREFIX}” are reserved for guests; pick another."
            )
        return username
