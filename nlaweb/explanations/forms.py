"""The explain request of a token chip or a selection of chips: one or more `position` values."""

from __future__ import annotations

from typing import Any

from django import forms

from nlaweb.explanations.request import ExplainRejected, check_positions


class PositionsField(forms.Field):
    """Every value of a repeated key as a list of token positions (whole numbers from 0)."""

    widget = forms.MultipleHiddenInput
    default_error_messages = {
        "required": "Pick a token to explain.",
        "invalid": "Token positions must be whole numbers; got {value!r}.",
        "min_value": "Token positions start at 0; got {value}.",
    }

    def to_python(self, value: Any) -> list[int]:
        positions = []
        for raw in value or []:
            try:
                position = int(str(raw).strip())
            except ValueError:
                raise forms.ValidationError(
                    self.error_messages["invalid"].format(value=raw), code="invalid"
                ) from None
            if position < 0:
                raise forms.ValidationError(
                    self.error_messages["min_value"].format(value=position), code="min_value"
                )
            positions.append(position)
        return positions


class ExplainForm(forms.Form):
    position = PositionsField()

    def clean_position(self) -> list[int]:
        """At most MAX_POSITIONS_PER_REQUEST positions, each once (the domain's own rule)."""
        positions: list[int] = self.cleaned_data["position"]
        try:
            check_positions(positions)
        except ExplainRejected as rejected:
            raise forms.ValidationError(str(rejected), code="positions") from None
        return positions
