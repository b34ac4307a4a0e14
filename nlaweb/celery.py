"""The Celery app. The web side enqueues tasks by name (`workers.*`), so it never imports torch."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nlaweb.settings")

app = Celery("nlaweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
