from __future__ import annotations

from django.contrib import admin

from nlaweb.api.models import ApiJob, ApiKey, ApiLimits


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "user", "shown_prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("user", "prefix", "digest", "created_at", "last_used_at")


@admin.register(ApiLimits)
class ApiLimitsAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Per-user overrides of API_EXPLAIN_PER_HOUR and API_COMPLETION_PER_HOUR."""

    list_display = ("user", "explain_per_hour", "completion_per_hour")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)


@admin.register(ApiJob)
class ApiJobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("kind", "source_id", "status", "owner", "created_at", "finished_at")
    list_filter = ("kind", "status")
    readonly_fields = ("payload", "result")
