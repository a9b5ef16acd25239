from django.apps import AppConfig


class FrontendConfig(AppConfig):
    name = "frontend"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registers the Celery tasks in the web process too, where frontend.queues sends them by name;
        # frontend.tasks needs the models, so this cannot happen before the apps are loaded.
        from frontend import tasks  # noqa: F401
