from __future__ import annotations

from django.contrib import admin

from nlaweb.chat.models import Conversation, Message, Snapshot


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("__str__", "owner", "source_id", "updated_at")
    list_filter = ("source_id",)
    search_fields = ("title", "owner__username")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("__str__", "conversation", "role", "status", "created_at")
    list_filter = ("role", "status")


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("__str__", "conversation", "source_id", "created_at")
