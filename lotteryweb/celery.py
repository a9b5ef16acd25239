"""The Celery app: Redis is the broker; tasks are discovered in installed apps (frontend.tasks)."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotteryweb.settings")

app = Celery("lotteryweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
