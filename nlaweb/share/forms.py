from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from django import forms

from nlaweb.explanations.models import Explanation
from nlaweb.share.document import MAX_IMPORT_BYTES
from nlaweb.share.models import COMMENT_MAX_CHARS
from nlaweb.share.sharing import Pin
from nlaweb.share.transfer import ImportRejected, check_size
from nlaweb.thread.panel import Section, section


def pin_value(position: int, paragraph: int | None = None) -> str:
    """A pin as the form posts it: `12` (the token) or `12:0` (its first paragraph)."""
    return str(position) if paragraph is None else f"{position}:{paragraph}"


@dataclass(frozen=True)
class PinOption:
    """One finished explanation the owner may pin: the token, or one of its paragraphs."""

    value: str
    section: Section
    paragraphs: list[tuple[str, str]]  # (pin value, paragraph text)


def pin_options(explanations: dict[int, Explanation]) -> list[PinOption]:
    return [
        PinOption(
            pin_value(p),
            section(e),
            [(pin_value(p, i), text) for i, text in enumerate(e.paragraphs)],
        )
        for p, e in sorted(explanations.items())
    ]


class ShareForm(forms.Form):
    """What to pin (a finished explanation's token, or one paragraph of it) and a plain comment."""

    pin = forms.ChoiceField(required=False, widget=forms.RadioSelect)
    comment = forms.CharField(
        required=False,
        strip=True,
        max_length=COMMENT_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "What should a reader notice?"}),
        error_messages={
            "max_length": f"The comment can hold at most {COMMENT_MAX_CHARS} characters; "
            "it has %(show_value)d."
        },
    )

    def __init__(self, *args: Any, explanations: dict[int, Explanation], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "nothing pinned")]
        for option in pin_options(explanations):
            choices.append((option.value, option.value))
            choices += [(value, value) for value, _ in option.paragraphs]
        pin = cast(forms.ChoiceField, self.fields["pin"])
        pin.choices = choices
        pin.error_messages["invalid_choice"] = (
            "That token has no finished explanation to pin; pick one from the list."
        )

    def clean_pin(self) -> Pin | None:
        raw: str = self.cleaned_data["pin"]
        if not raw:
            return None
        position, _, paragraph = raw.partition(":")
        return Pin(int(position), int(paragraph) if paragraph else None)


class ImportForm(forms.Form):
    file = forms.FileField(
        error_messages={
            "required": "Choose an exported conversation (a .json file) to import.",
            "empty": "This file is empty.",
        }
    )

    def clean_file(self) -> bytes:
        """The file's bytes, at most one past the limit (the import names the size it refuses)."""
        upload = self.cleaned_data["file"]
        try:
            check_size(upload.size)
        except ImportRejected as rejected:
            raise forms.ValidationError(str(rejected)) from None
        data: bytes = upload.read(MAX_IMPORT_BYTES + 1)
        return data
