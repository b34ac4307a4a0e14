from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from nlaweb.chat import views as chat
from nlaweb.explanations import views as explanations
from nlaweb.sources_admin import sources_page


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("", chat.home, name="home"),
    path("c/new", chat.new_conversation, name="new_conversation"),
    path("c/<uuid:conversation_id>/", chat.conversation, name="conversation"),
    path("c/<uuid:conversation_id>/send", chat.send, name="send"),
    path(
        "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/explain",
        explanations.explain,
        name="explain",
    ),
    path("explanations/<uuid:explanation_id>/", explanations.panel, name="explanation_panel"),
    path("", include("nlaweb.api.urls")),
    path("healthz", healthz),
    path("admin/nla-sources/", admin.site.admin_view(sources_page), name="nla_sources"),
    path("admin/", admin.site.urls),
]
