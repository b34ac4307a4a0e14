"""A read-only admin page listing the configured NLA sources (they are configuration, not rows)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from nlaweb.sources.configured import build_figures, configured_sources


def sources_page(request: HttpRequest) -> HttpResponse:
    rows = [{"source": s, "figures": build_figures(s.id)} for s in configured_sources()]
    context = {**admin.site.each_context(request), "title": "NLA sources", "rows": rows}
    return TemplateResponse(request, "admin/nla_sources.html", context)
