"""One settings module, driven by the environment with safe local defaults.

Environment variables (all optional):
  LOTTERYWEB_PRODUCTION   "1" on a lab server: requires the secret key, HTTPS-only cookies, HSTS, SSL redirect
  LOTTERYWEB_SECRET_KEY   Django secret key (a fixed development key otherwise)
  LOTTERYWEB_DEBUG        "1" for Django debug pages (default off; never in production)
  LOTTERYWEB_ALLOWED_HOSTS  comma-separated host names (default localhost, 127.0.0.1, [::1])
  LOTTERYWEB_CSRF_TRUSTED_ORIGINS  e.g. https://lottery.lab.example.org (behind a TLS proxy)
  LOTTERYWEB_SSL_REDIRECT, LOTTERYWEB_HSTS_SECONDS, LOTTERYWEB_HSTS_INCLUDE_SUBDOMAINS, LOTTERYWEB_HSTS_PRELOAD
                          production HTTPS details (defaults: on, one year, on, on)
  LOTTERYWEB_GPU_QUEUE    Celery queue of device-cuda experiments (default "gpu")
  LOTTERYWEB_LISTENER_SECONDS  how often workers announce their queues in Redis (default 5)
  DATABASE_URL            e.g. postgres://user:pass@host/db (default: SQLite file)
  LOTTERYWEB_DB_PATH      the SQLite file when DATABASE_URL is unset (default <repo>/db.sqlite3)
  LOTTERYWEB_REDIS_URL    Celery broker and channel layer (default redis://127.0.0.1:6379/0)
  LOTTERYWEB_CHANNEL_LAYER  "redis" (default) or "memory" (single process, for tests)
  LOTTERYWEB_CELERY_EAGER "1" runs tasks inside the web process (tests only)
  LOTTERYWEB_RUNS_DIR     where run directories go (default <repo>/runs)
  LOTTERYWEB_DATA_DIR     dataset directory, read by the trainer (default <repo>/data)
  LOTTERYWEB_DATASET_MIRROR  base URL the datasets panel's Download button (and `python -m trainer download`)
                          fetches from, as <mirror>/<dataset>/<file> (default: torchvision's own URLs)
  LOTTERYWEB_TORCH_THREADS  torch threads of the Celery worker (default: torch's own choice)
  LOTTERYWEB_STACK_SIZE   pins the stack size of runs whose spec sets none (default: measured), read by the trainer
  LOTTERYWEB_STACK_SIZE_CACHE  the measured stack sizes, read by the trainer
                          (default ~/.cache/lotteryweb/stack_sizes.json)
  LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT  the most workers one experiment's pieces take at once, and what
                          its plan splits it for (default 4; frontend/distributed.py)
  LOTTERYWEB_MAX_SWEEP_POINTS  the most experiments one sweep may make, configurations × seeds (default 500)
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in ("1", "true", "yes", "on")


def _env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "").strip()
    return [item.strip() for item in value.split(",") if item.strip()] if value else default


# Local use (run.sh) listens on localhost with a fixed development key. A lab server sets
# LOTTERYWEB_PRODUCTION=1 (the Docker image does): a real secret key is then required, and the
# HTTPS-only cookie and HSTS settings below are on (the server sits behind a TLS proxy).
PRODUCTION = _env_flag("LOTTERYWEB_PRODUCTION")
SECRET_KEY = os.environ.get("LOTTERYWEB_SECRET_KEY") or "lotteryweb-local-development-key-change-me-when-exposed"
if PRODUCTION and (len(SECRET_KEY) < 50 or "development" in SECRET_KEY):
    from django.core.exceptions import ImproperlyConfigured
    raise ImproperlyConfigured("LOTTERYWEB_PRODUCTION=1 needs LOTTERYWEB_SECRET_KEY: "
                               "at least 50 random characters, e.g. "
                               "python -c 'import secrets; print(secrets.token_urlsafe(64))'")
DEBUG = _env_flag("LOTTERYWEB_DEBUG") and not PRODUCTION
ALLOWED_HOSTS = _env_list("LOTTERYWEB_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = _env_list("LOTTERYWEB_CSRF_TRUSTED_ORIGINS", [])  # e.g. https://lottery.lab.example.org
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # the TLS proxy says the request was HTTPS
    SECURE_SSL_REDIRECT = _env_flag("LOTTERYWEB_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("LOTTERYWEB_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_flag("LOTTERYWEB_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _env_flag("LOTTERYWEB_HSTS_PRELOAD", True)

INSTALLED_APPS = [
    "daphne",  # first, so `manage.py runserver` serves ASGI (websockets included)
    "django.contrib.admin",  # accounts are managed at /admin/ by a superuser
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "experiment_list"
LOGOUT_REDIRECT_URL = "login"

ROOT_URLCONF = "lotteryweb.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                           "django.contrib.auth.context_processors.auth",
                                           "django.contrib.messages.context_processors.messages"]},
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "lotteryweb.asgi.application"

_sqlite_path = os.environ.get("LOTTERYWEB_DB_PATH") or str(BASE_DIR / "db.sqlite3")
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite_path,
            # The Celery worker writes progress while the web server reads it: WAL lets both
            # proceed, IMMEDIATE avoids lock upgrades that fail instead of waiting.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("LOTTERYWEB_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "static_collected"
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "frontend.staticfinders.PlotlyJsFinder",  # plotly.min.js from the plotly package: no CDN
]

REDIS_URL = os.environ.get("LOTTERYWEB_REDIS_URL", "redis://127.0.0.1:6379/0")
if os.environ.get("LOTTERYWEB_CHANNEL_LAYER", "redis") == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                  "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30}}}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ALWAYS_EAGER = _env_flag("LOTTERYWEB_CELERY_EAGER")
CELERY_TASK_IGNORE_RESULT = True  # results live in the database and the run directory
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # one long experiment at a time; others wait in Redis
CELERY_TASK_ACKS_LATE = False  # a lost worker's runs come back through frontend.recovery instead
# Crash recovery (frontend/recovery.py): heartbeats of running experiments, and how old one may get.
LOTTERYWEB_HEARTBEAT_SECONDS = float(os.environ.get("LOTTERYWEB_HEARTBEAT_SECONDS", "5"))
LOTTERYWEB_HEARTBEAT_TIMEOUT = float(os.environ.get("LOTTERYWEB_HEARTBEAT_TIMEOUT", "60"))
LOTTERYWEB_RECOVERY_INTERVAL = float(os.environ.get("LOTTERYWEB_RECOVERY_INTERVAL", "15"))
# Workers announce their queues this often (a silent worker drops out after 3 intervals).
LOTTERYWEB_LISTENER_SECONDS = float(os.environ.get("LOTTERYWEB_LISTENER_SECONDS", "5"))

CELERY_TASK_ROUTES = ("frontend.queues.route_task",)  # device "cuda*" -> the gpu queue
LOTTERYWEB_GPU_QUEUE = os.environ.get("LOTTERYWEB_GPU_QUEUE", "gpu")

LOTTERYWEB_RUNS_DIR = Path(os.environ.get("LOTTERYWEB_RUNS_DIR") or BASE_DIR / "runs")
LOTTERYWEB_DATA_DIR = os.environ.get("LOTTERYWEB_DATA_DIR") or None  # None: the trainer's default
LOTTERYWEB_DATASET_MIRROR = os.environ.get("LOTTERYWEB_DATASET_MIRROR", "").strip() or None  # None: torchvision's URLs
LOTTERYWEB_TORCH_THREADS = int(os.environ.get("LOTTERYWEB_TORCH_THREADS") or 0) or None
# An experiment's chains and controls split into pieces for this many workers, and take at most this many at once
# (frontend/distributed.py). Its results depend on it (which networks share a stack), not on how many are idle.
LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT = max(1, int(os.environ.get("LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT") or 4))
LOTTERYWEB_MAX_SWEEP_POINTS = int(os.environ.get("LOTTERYWEB_MAX_SWEEP_POINTS", "500"))
# At most this many channel messages per second per running experiment.
LOTTERYWEB_PROGRESS_MESSAGES_PER_SECOND = float(os.environ.get("LOTTERYWEB_PROGRESS_MESSAGES_PER_SECOND", "10"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOTTERYWEB_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
