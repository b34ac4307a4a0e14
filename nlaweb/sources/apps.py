from django.apps import AppConfig


class SourcesConfig(AppConfig):
    """No models: installed for `manage.py prepare_demo`."""

    name = "nlaweb.sources"
