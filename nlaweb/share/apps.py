from django.apps import AppConfig


class ShareConfig(AppConfig):
    name = "nlaweb.share"
    default_auto_field = "django.db.models.BigAutoField"
