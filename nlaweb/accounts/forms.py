from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import PasswordChangeForm, UserCreationForm
from django.contrib.auth.password_validation import password_validators_help_texts

from nlaweb.accounts.guests import GUEST_PREFIX


def password_help() -> str:
    """The validators' rules as sentences (Django's own help is an HTML list)."""
    return " ".join(password_validators_help_texts())


class SignupForm(UserCreationForm):  # type: ignore[type-arg]
    """Django's user creation form (and its password validators); guest names are reserved."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["password1"].help_text = password_help()

    def clean_username(self) -> str:
        username: str = super().clean_username() or ""
        if username.lower().startswith(GUEST_PREFIX):
            raise forms.ValidationError(
                f"Usernames starting with “{GUEST_PREFIX}” are reserved for guests; pick another."
            )
        return username


class NewPasswordForm(PasswordChangeForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["new_password1"].help_text = password_help()
