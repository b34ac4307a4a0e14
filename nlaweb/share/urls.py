from __future__ import annotations

from django.urls import path

from nlaweb.share import views

urlpatterns = [
    path("c/<uuid:conversation_id>/share", views.share_new, name="share_new"),
    path("c/<uuid:conversation_id>/export", views.export, name="export"),
    path("import/", views.import_conversation, name="import_conversation"),
    path("shares/", views.shares, name="shares"),
    path("shares/<slug:share_id>/revoke", views.revoke, name="share_revoke"),
    path("s/<slug:share_id>", views.share_view, name="share_view"),
    path("s/<slug:share_id>/embed", views.share_embed, name="share_embed"),
    path("s/<slug:share_id>/explanations/<int:position>", views.share_panel, name="share_panel"),
    path("s/<slug:share_id>/close", views.share_close, name="share_close"),
    path("s/<slug:share_id>/copy", views.share_copy, name="share_copy"),
]
