"""ASGI entry point, served by daphne through `python -m vantage.server vantage.asgi:application`
(daphne's options; request and response bodies stay out of memory, see vantage/server.py).

HTTP goes to Django; websockets (`/ws/node/`, `/ws/events/`) to Channels consumers.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantage.settings")
django_application = get_asgi_application()  # sets Django up before the consumers import models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.ws_auth import WebsocketAuthMiddleware  # noqa: E402
from vantage.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)
