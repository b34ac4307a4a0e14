from __future__ import annotations

from django.contrib import admin

from nlaweb.share.models import Share


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "conversation", "pinned_position", "created_at", "revoked_at", "views")
    list_filter = ("revoked_at",)
    readonly_fields = ("id", "conversation", "snapshot", "explanations", "source_revisions")
