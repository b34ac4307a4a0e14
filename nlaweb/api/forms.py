from __future__ import annotations

from django import forms


class NewKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        error_messages={"required": "Name the key (e.g. the script or machine that uses it)."},
    )
