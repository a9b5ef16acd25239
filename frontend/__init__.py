"""The web app: experiment form, live page over websockets, result pages and the Celery task."""
