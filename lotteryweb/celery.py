"""The Celery app: Redis is the broker; tasks are discovered in installed apps (frontend.tasks).

Every worker also watches for runs whose worker was lost and queues them again (frontend.recovery),
and announces the queues it listens on (frontend.listeners): frontend.tasks starts both when the worker is ready.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotteryweb.settings")

app = Celery("lotteryweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
