"""The Django project of lotteryweb: settings, URLs, ASGI (HTTP + websockets) and the Celery app."""
from lotteryweb.celery import app as celery_app

__all__ = ("celery_app",)
