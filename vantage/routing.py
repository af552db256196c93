from django.urls import path

from accounts.consumers import EventsConsumer
from collaborations.consumers import NodeConsumer

websocket_urlpatterns = [
    path("ws/node/", NodeConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
]
