from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings


class MessageForm(forms.Form):
    content = forms.CharField(
        strip=True,
        error_messages={"required": "Write a message first: an empty message cannot be sent."},
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Message the model…"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # No maxlength: it would silently cut a long paste. The count shows the limit and
        # clean_content refuses a longer message with its sentence, the text kept in the box.
        self.fields["content"].widget.attrs["data-max-chars"] = settings.MAX_MESSAGE_CHARS

    def clean_content(self) -> str:
        content: str = self.cleaned_data["content"]
        limit = settings.MAX_MESSAGE_CHARS
        if len(content) > limit:
            raise forms.ValidationError(
                f"This message has {len(content)} characters; the limit is {limit}. Shorten it and send again."
            )
        return content


class RegenerateForm(forms.Form):
    temperature = forms.FloatField(
        min_value=0.0,
        max_value=2.0,
        initial=0.7,
        error_messages={"invalid": "Temperature must be a number between 0 and 2."},
    )
    seed = forms.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        error_messages={"invalid": "The seed must be a whole number."},
    )


class BranchForm(forms.Form):
    to = forms.UUIDField(error_messages={"invalid": "Pick one of the message's alternatives."})
