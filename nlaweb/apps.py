from django.apps import AppConfig


class NlawebConfig(AppConfig):
    """The project itself, installed for `manage.py serve` (no models)."""

    name = "nlaweb"
