from django.urls import path

from frontend.consumers import ExperimentConsumer

websocket_urlpatterns = [
    path("ws/e/<int:experiment_id>/", ExperimentConsumer.as_asgi()),
]
