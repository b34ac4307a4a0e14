from django.apps import AppConfig


class ExplanationsConfig(AppConfig):
    name = "nlaweb.explanations"
    default_auto_field = "django.db.models.BigAutoField"
