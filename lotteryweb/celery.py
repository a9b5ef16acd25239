"""The Celery app: Redis is the broker; tasks are discovered in installed apps (frontend.tasks).

Every worker also watches for runs whose worker was lost and queues them again (frontend.recovery).
"""
import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotteryweb.settings")

app = Celery("lotteryweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def watch_for_lost_runs(**_):
    from frontend.recovery import start_watchdog
    start_watchdog()
