from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "nlaweb.api"
    label = "api"
    verbose_name = "Researcher API"
