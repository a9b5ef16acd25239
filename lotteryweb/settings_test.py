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
LOTTERYWEB_RUNS_DIR = Path(tempfile.gettempdir()) / "lotteryweb-test-runs"
if not os.environ.get("DATABASE_URL"):  # set: the tests run on that server (scripts/with_postgres.sh)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:", "OPTIONS": {"timeout": 20}}}
