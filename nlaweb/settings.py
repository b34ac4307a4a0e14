"""The one settings module. Every value comes from the environment (README's table); the defaults run
the embedded mode: SQLite, in-process Celery broker, in-memory channel layer, worker thread in the web
process. Setting REDIS_URL switches to Redis for the broker, result backend and channel layer, and GPU
work moves to `celery -A nlaweb worker -Q gpu` processes."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from nlaweb.env import env_bool, env_int, env_list, env_path, env_str
from nlaweb.layers import redis_channel_layer

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR: Path = env_path("NLAWEB_DATA_DIR", BASE_DIR / "var") or BASE_DIR / "var"

REDIS_URL = env_str("REDIS_URL")
EMBEDDED = REDIS_URL is None

DEBUG = env_bool("DEBUG", default=EMBEDDED)
_secret = env_str("SECRET_KEY")
if _secret is None and not DEBUG:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
SECRET_KEY = _secret or "django-insecure-embedded-mode-only-never-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "nlaweb.accounts",
    "nlaweb.chat",
    "nlaweb.explanations",
    "nlaweb.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "nlaweb.accounts.middleware.GuestUserMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "nlaweb.urls"
ASGI_APPLICATION = "nlaweb.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

_sqlite_url = f"sqlite:///{DATA_DIR / 'nlaweb.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", _sqlite_url) or _sqlite_url, conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A fresh checkout has no data directory yet; SQLite creates the file, not its folder.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The embedded worker thread writes while the server reads: WAL plus IMMEDIATE transactions
    # avoid "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Channels: Redis in production; a thread-safe in-memory layer for the embedded worker thread.
CHANNEL_LAYERS = {
    "default": redis_channel_layer(REDIS_URL)
    if REDIS_URL
    else {"BACKEND": "nlaweb.layers.ThreadSafeInMemoryChannelLayer"}
}

# Celery (read by nlaweb/celery.py with the CELERY_ namespace).
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_DEFAULT_QUEUE = "web"
CELERY_TASK_ROUTES = {"workers.*": {"queue": "gpu"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 900, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 5
CELERY_IMPORTS = ("workers.tasks",)
# An unacknowledged job of a killed worker is redelivered once its time limit has surely passed.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 60}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
EMBEDDED_WORKER = env_bool("EMBEDDED_WORKER", default=EMBEDDED)

# NLA sources and the worker's device.
NLA_SOURCES_FILE = env_path("NLA_SOURCES_FILE", None)
NLA_DEFAULT_SOURCE = env_str("NLA_DEFAULT_SOURCE")
NLA_WORKER_SOURCES = env_list("NLA_WORKER_SOURCES", [])
NLA_DEVICE = env_str("NLA_DEVICE")
NLA_DTYPE = env_str("NLA_DTYPE")
MAX_MESSAGE_CHARS = env_int("MAX_MESSAGE_CHARS", 4000, minimum=1)
REPLY_MAX_NEW_TOKENS = env_int("REPLY_MAX_NEW_TOKENS", 200, minimum=1)

# Researcher API (/api/v1): hourly limits per user (overridable per user in the admin), how long a
# request waits for the workers, and keyless use of the embedded default from the loopback only.
API_EXPLAIN_PER_HOUR = env_int("API_EXPLAIN_PER_HOUR", 120, minimum=1)
API_COMPLETION_PER_HOUR = env_int("API_COMPLETION_PER_HOUR", 240, minimum=1)
API_WAIT_SECONDS = env_int("API_WAIT_SECONDS", 300, minimum=1)
API_LOCAL_NO_KEY = env_bool("API_LOCAL_NO_KEY", default=False)
if API_LOCAL_NO_KEY and not EMBEDDED:
    raise ImproperlyConfigured(
        "API_LOCAL_NO_KEY=1 is only for the embedded default (no REDIS_URL); unset it."
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
