"""ASGI entry point: Django for HTTP (static files included), Channels for websockets."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotteryweb.settings")
django_http = get_asgi_application()  # sets Django up before the consumers import models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from frontend.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    # A single-user lab tool: Django serves its own static files (plotly.js) rather than needing a proxy.
    "http": ASGIStaticFilesHandler(django_http),
    "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
})
