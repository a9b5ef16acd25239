"""Settings for the in-process test suite: no Redis, tasks run eagerly, a throwaway runs directory.

The integration and browser tests start real processes with lotteryweb.settings instead.
"""
import os
import tempfile
from pathlib import Path

from lotteryweb.settings import *  # noqa: F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = "memory://"
# One runs directory per pytest-xdist worker: two workers must never train into one run directory.
LOTTERYWEB_RUNS_DIR = Path(tempfile.gettempdir()) / f"lotteryweb-test-runs{os.environ.get('PYTEST_XDIST_WORKER', '')}"
if not os.environ.get("DATABASE_URL"):  # set: the tests run on that server (scripts/with_postgres.sh)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:", "OPTIONS": {"timeout": 20}}}
