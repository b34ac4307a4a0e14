from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "nlaweb.accounts"
    default_auto_field = "django.db.models.BigAutoField"
