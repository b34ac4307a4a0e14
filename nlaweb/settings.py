"""The one settings module. Every value comes from the environment (README's table); the defaults run
the embedded mode: SQLite, in-process Celery broker, in-memory channel layer, worker thread in the web
process. Setting REDIS_URL switches to Redis for the broker, result backend and channel layer, and GPU
work moves to `celery -A nlaweb worker -Q gpu` processes."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from nlaweb.env import embedded_secret_key, env_bool, env_int, env_list, env_path, env_str
from nlaweb.layers import redis_channel_layer

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR: Path = env_path("NLAWEB_DATA_DIR", BASE_DIR / "var") or BASE_DIR / "var"

REDIS_URL = env_str("REDIS_URL")
EMBEDDED = REDIS_URL is None

# Off unless DEBUG=1, in every mode: a stranger must never see Django's debug page.
DEBUG = env_bool("DEBUG", default=False)
# Production must name its key; the embedded mode (and any DEBUG run) makes one in the data directory.
_secret = env_str("SECRET_KEY")
if _secret is None and not (EMBEDDED or DEBUG):
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
#: The SECRET_KEY of docker/.env.example: a deployment that kept it is refused in every mode.
PLACEHOLDER_SECRET_KEYS = frozenset({"change-me-to-a-long-random-string"})
if _secret in PLACEHOLDER_SECRET_KEYS:
    raise ImproperlyConfigured(
        "SECRET_KEY is the placeholder of docker/.env.example; set a long random one, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )
SECRET_KEY = _secret or embedded_secret_key(DATA_DIR)

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
    "csp",
    "django_htmx",
    "template_partials",
    "ninja",  # /api/v1/docs serves Swagger UI from ninja's own static files, not a CDN
    "nlaweb.accounts",
    "nlaweb.chat",
    "nlaweb.explanations",
    "nlaweb.api",
    "nlaweb.share",
    "nlaweb.latents",
    "nlaweb.sources",  # manage.py prepare_demo
    "nlaweb",  # manage.py serve
]

MIDDLEWARE = [
    "nlaweb.middleware.health.HealthMiddleware",  # first: a container's probe needs no host, session or user
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # outside the outage page, so a 503 page has the policy too
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "nlaweb.middleware.outage.OutageMiddleware",  # before anything that reads the database (sessions, users)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "nlaweb.middleware.form_body.FormBodyMiddleware",  # before the CSRF check, which reads the form too
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "nlaweb.middleware.private_cache.PrivateCacheMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "nlaweb.share.framing.FrameAncestorsMiddleware",
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
                "nlaweb.accounts.context.account",
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
#: Seconds a connection attempt to PostgreSQL may take before a request answers 503.
DATABASE_CONNECT_TIMEOUT_S = env_int("DATABASE_CONNECT_TIMEOUT_S", 3, minimum=1)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = DATABASE_CONNECT_TIMEOUT_S
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
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
#: Failed log-ins or sign-up attempts per hour for one username, and from one client address
#: (nlaweb/accounts/throttle.py); more are refused with a sentence (429).
AUTH_LIMIT_PER_ACCOUNT = env_int("AUTH_LIMIT_PER_ACCOUNT", 10, minimum=1)
AUTH_LIMIT_PER_ADDRESS = env_int("AUTH_LIMIT_PER_ADDRESS", 100, minimum=1)
# Visitors are guests until they sign up; a guest account is made on their first POST
# (nlaweb.accounts.guests.guest_on_post), never on a GET.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
#: The web image collects into its own folder at build time (docker/web.Dockerfile).
STATIC_ROOT = env_path("STATIC_ROOT", DATA_DIR / "staticfiles") or DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

SESSION_COOKIE_HTTPONLY = True
#: An HTTPS deployment (TLS ends at a proxy in front of daphne, which passes X-Forwarded-Proto):
#: http redirects to https, HSTS for a year, secure session and CSRF cookies.
HTTPS = env_bool("HTTPS", default=False)
SECURE_SSL_REDIRECT = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_HSTS_SECONDS = 31_536_000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Content-Security-Policy (django-csp): scripts and styles from this site's files only, no inline
# script or style anywhere (templates keep none: tests/unit/test_csp.py), websockets to this origin.
# A share's embed widens frame-ancestors (nlaweb/share/framing.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Channels: Redis in production; a thread-safe in-memory layer for the embedded worker thread.
#: Seconds the web side waits for the broker before a click or a send answers 503 (also how long a
#: publisher waits for the channel layer's Redis before dropping a frame).
BROKER_CONNECT_TIMEOUT_S = env_int("BROKER_CONNECT_TIMEOUT_S", 2, minimum=1)
CHANNEL_LAYERS = {
    "default": redis_channel_layer(REDIS_URL, BROKER_CONNECT_TIMEOUT_S)
    if REDIS_URL
    else {"BACKEND": "nlaweb.layers.ThreadSafeInMemoryChannelLayer"}
}

# Celery (read by nlaweb/celery.py with the CELERY_ namespace). No result backend: the database
# rows are the results, and a backend made every send wait ~19 s for Redis when it was down.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "web"
CELERY_TASK_ROUTES = {"workers.*": {"queue": "gpu"}, "nlaweb.sweep": {"queue": "sweep"}}
# A job is acknowledged after it ran, and a job whose worker process died (SIGKILL, the kernel's
# out-of-memory killer) goes back to the queue at once; the rows' attempt counter stops a job that
# kills its worker every time (JOB_MAX_ATTEMPTS), and the sweeper covers a lost message.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 900, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 5
CELERY_IMPORTS = ("workers.tasks", "nlaweb.jobs.beat")
CELERY_BROKER_CONNECTION_TIMEOUT = BROKER_CONNECT_TIMEOUT_S
# An unacknowledged job of a killed worker is redelivered once its time limit has surely passed.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 60,
    "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Jobs that went silent (nlaweb/sweep.py). A worker marks its rows alive every
# HEARTBEAT_INTERVAL_S; rows silent for HEARTBEAT_TIMEOUT_S are queued again (or failed after
# JOB_MAX_ATTEMPTS) by the sweeper, which runs every SWEEP_INTERVAL_S (Celery beat in production, a
# thread of `manage.py serve` in the embedded mode).
HEARTBEAT_INTERVAL_S = env_int("HEARTBEAT_INTERVAL_S", 10, minimum=1)
HEARTBEAT_TIMEOUT_S = env_int("HEARTBEAT_TIMEOUT_S", 30, minimum=2)
if HEARTBEAT_TIMEOUT_S < 2 * HEARTBEAT_INTERVAL_S:
    raise ImproperlyConfigured(
        f"HEARTBEAT_TIMEOUT_S ({HEARTBEAT_TIMEOUT_S}) must be at least twice HEARTBEAT_INTERVAL_S "
        f"({HEARTBEAT_INTERVAL_S}), or live jobs would be taken for dead ones."
    )
SWEEP_INTERVAL_S = env_int("SWEEP_INTERVAL_S", 10, minimum=1)
#: A queued row whose job was sent this long ago and still waits while the queue is empty lost its
#: message (a broker restarted without its data); the sweeper sends it again.
SWEEP_RESEND_AFTER_S = env_int("SWEEP_RESEND_AFTER_S", 60, minimum=1)
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 2, minimum=1)
#: How long a worker keeps retrying to store a finished result while the database is unreachable.
STORE_RETRY_FOR_S = env_int("STORE_RETRY_FOR_S", 120, minimum=0)
#: Explanations one person may have queued or running at once (a flood waits its turn).
MAX_ROWS_IN_FLIGHT_PER_USER = env_int("MAX_ROWS_IN_FLIGHT_PER_USER", 64, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "sweep": {
        "task": "nlaweb.sweep",
        "schedule": float(SWEEP_INTERVAL_S),
        "options": {"expires": float(SWEEP_INTERVAL_S)},  # a sweeper that was down skips old ones
    }
}
CELERY_BEAT_SCHEDULER = "celery.beat:Scheduler"  # in memory: an interval needs no schedule file
EMBEDDED_WORKER = env_bool("EMBEDDED_WORKER", default=EMBEDDED)

# NLA sources and the worker's device.
NLA_SOURCES_FILE = env_path("NLA_SOURCES_FILE", None)
NLA_DEFAULT_SOURCE = env_str("NLA_DEFAULT_SOURCE")
NLA_WORKER_SOURCES = env_list("NLA_WORKER_SOURCES", [])
NLA_DEVICE = env_str("NLA_DEVICE")
NLA_DTYPE = env_str("NLA_DTYPE")
# Who writes replies and explanations on a worker: transformers ("hf") or vLLM (docs/serving.md).
NLA_BACKEND = env_str("NLA_BACKEND", "hf") or "hf"
if NLA_BACKEND not in ("hf", "vllm"):
    raise ImproperlyConfigured(f"NLA_BACKEND must be hf or vllm, not {NLA_BACKEND!r}.")
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
