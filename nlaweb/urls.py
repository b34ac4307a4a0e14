from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from nlaweb.chat import edit_views as edits
from nlaweb.chat import views as chat
from nlaweb.explanations import table_views as tables
from nlaweb.explanations import views as explanations
from nlaweb.explanations import with_source_views as with_source
from nlaweb.middleware.health import healthz
from nlaweb.sources.admin_page import sources_page


def favicon(request: HttpRequest) -> HttpResponse:
    """Clients that ask for /favicon.ico without reading the page's <link rel="icon">."""
    return HttpResponsePermanentRedirect(static("nlaweb/favicon.svg"))


urlpatterns = [
    path("", chat.home, name="home"),
    path("c/new", chat.new_conversation, name="new_conversation"),
    path("c/<uuid:conversation_id>/", chat.conversation, name="conversation"),
    path("c/<uuid:conversation_id>/send", chat.send, name="send"),
    path("c/<uuid:conversation_id>/branch", edits.switch_branch, name="switch_branch"),
    path("c/<uuid:conversation_id>/m/<uuid:message_id>/edit", edits.editor, name="editor"),
    path("c/<uuid:conversation_id>/m/<uuid:message_id>/save", edits.save_edit, name="save_edit"),
    path(
        "c/<uuid:conversation_id>/m/<uuid:message_id>/regenerate",
        edits.regenerate,
        name="regenerate",
    ),
    path(
        "c/<uuid:conversation_id>/m/<uuid:message_id>/continue",
        edits.continue_reply,
        name="continue_reply",
    ),
    path(
        "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/explain",
        explanations.explain,
        name="explain",
    ),
    path("explanations/<uuid:explanation_id>/", explanations.panel, name="explanation_panel"),
    path("c/<uuid:conversation_id>/close", explanations.close, name="close_explanations"),
    path("c/<uuid:conversation_id>/state", chat.page_state, name="page_state"),
    path(
        "explanations/<uuid:explanation_id>/cancel",
        explanations.cancel_explanation,
        name="cancel_explanation",
    ),
    path(
        "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/m/<uuid:message_id>/explain-all",
        explanations.explain_message,
        name="explain_message",
    ),
    path(
        "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/m/<uuid:message_id>/table",
        tables.table,
        name="message_table",
    ),
    path(
        "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/m/<uuid:message_id>/table.csv",
        tables.table_csv_download,
        name="message_table_csv",
    ),
    path(
        "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/m/<uuid:message_id>/table.json",
        tables.table_json_download,
        name="message_table_json",
    ),
    path("runs/<uuid:run_id>/cancel", explanations.cancel_run, name="cancel_run"),
    path(
        "explanations/<uuid:explanation_id>/compare",
        explanations.compare_branches,
        name="compare_branches",
    ),
    path(
        "explanations/<uuid:explanation_id>/compare/<uuid:snapshot_id>",
        explanations.compare_with,
        name="compare_with",
    ),
    path(
        "explanations/<uuid:explanation_id>/sources",
        with_source.sources,
        name="explain_with_sources",
    ),
    path("explanations/<uuid:explanation_id>/with", with_source.explain_with, name="explain_with"),
    path("", include("nlaweb.share.urls")),
    path("accounts/", include("nlaweb.accounts.urls")),
    path("healthz", healthz, name="healthz"),  # answered by HealthMiddleware first
    path("favicon.ico", favicon),
    path("", include("nlaweb.api.urls")),
    path("", include("nlaweb.latents.urls")),
    path("admin/nla-sources/", admin.site.admin_view(sources_page), name="nla_sources"),
    path("admin/", admin.site.urls),
]
