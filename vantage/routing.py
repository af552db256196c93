from django.urls import path, re_path

from collaborations.consumers import EventsConsumer
from collaborations.consumers import NodeConsumer

NOT_FOUND_CLOSE_CODE = 4404


async def no_such_websocket(scope, receive, send):
    """Any other path: accepted and closed with 4404 and a reason, as the consumers close a
    refusal, rather than the router's "no route" error that the server answers with 500."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": NOT_FOUND_CLOSE_CODE, "reason": "No websocket at this path."})


websocket_urlpatterns = [
    path("ws/node/", NodeConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
    re_path(r"", no_such_websocket),
]
