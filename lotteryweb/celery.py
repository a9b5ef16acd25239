"""The Celery app: Redis is the broker; tasks are discovered in installed apps (frontend.tasks).

Every worker also watches for runs whose worker was lost and queues them again (frontend.recovery),
and announces the queues it listens on (frontend.listeners).
"""
import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotteryweb.settings")

app = Celery("lotteryweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def watch_for_lost_runs(sender=None, **_):
    from frontend.listeners import start_announcer
    from frontend.recovery import start_watchdog
    start_watchdog()
    if sender is not None:  # the worker's consumer: its name and the queues it consumes from
        start_announcer(sender.hostname, sender.app.amqp.queues.consume_from.keys())
