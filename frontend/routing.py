from django.urls import path

from frontend.consumers import ExperimentConsumer

websocket_urlpatterns = [
    path("ws/e/<int:experiment_id>/", ExperimentConsumer.as_asgi()),
    path("ws/s/<str:token>/", ExperimentConsumer.as_asgi()),  # a share link's live page
]
