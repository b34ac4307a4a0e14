from __future__ import annotations

from django.contrib import admin

from nlaweb.explanations.models import Explanation


@admin.register(Explanation)
class ExplanationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "__str__",
        "source_id",
        "status",
        "stage",
        "relative_mse",
        "confidence",
        "created_at",
    )
    list_filter = ("status", "source_id", "confidence")
    readonly_fields = ("error",)
