from django.apps import AppConfig


class LatentsConfig(AppConfig):
    name = "nlaweb.latents"
    default_auto_field = "django.db.models.BigAutoField"
