"""ASGI entry point: `python -m vantage.server vantage.asgi:application` (see vantage/server.py).

HTTP: the body is read whole on the event loop (vantage.body), then the request goes to
Django through a thread-pool WSGI bridge (see vantage.wsgi_bridge for why); websockets
(`/ws/node/`, `/ws/events/`) to Channels consumers.
"""

import os
import re

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantage.settings")
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from accounts.ws_auth import WebsocketAuthMiddleware  # noqa: E402
from tasks.uploads import max_finish_request_bytes  # noqa: E402
from vantage.body import CompleteBody  # noqa: E402
from vantage.routing import websocket_urlpatterns  # noqa: E402
from vantage.wsgi_bridge import WSGIBridge  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": CompleteBody(
            WSGIBridge(get_wsgi_application(), threads=settings.VANTAGE_HTTP_THREADS),
            # A JSON or form body as Django would take it; a run's result upload, larger.
            max_body_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
            upload_paths=re.compile(r"/api/runs/[^/]+/finish/$"),
            max_upload_bytes=max_finish_request_bytes(),
            timeout_seconds=settings.VANTAGE_BODY_TIMEOUT_SECONDS,
            idle_seconds=settings.VANTAGE_BODY_IDLE_SECONDS,
            min_rate=settings.VANTAGE_BODY_MIN_RATE,
            max_spooling=settings.VANTAGE_MAX_SPOOLING_BODIES,
        ),
        "websocket": WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)
