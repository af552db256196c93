"""The portal's websocket: the session cookie opens /ws/events/ from the portal's own
origin only, and a logged-out session no longer does (driven through the real ASGI
application, as tests/test_websockets.py does for tokens)."""

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.portal.conftest import csrf_token
from vantage.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def _session_cookie(client: Client) -> str:
    return f"sessionid={client.cookies['sessionid'].value}"


def _open(cookie: str, origin: str):
    async def scenario():
        comm = WebsocketCommunicator(application, "/ws/events/",
                                     headers=[(b"cookie", cookie.encode()), (b"origin", origin.encode())])
        connected, _ = await comm.connect()
        assert connected
        first = await comm.receive_output(timeout=5)
        if first["type"] == "websocket.send":
            await comm.disconnect()
            return {"hello": first["text"]}
        return {"code": first.get("code"), "reason": first.get("reason")}

    return async_to_sync(scenario)()


def test_the_session_opens_the_event_socket_from_the_portals_origin_only(owner, collab):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    cookie = _session_cookie(client)
    opened = _open(cookie, "http://testserver")
    assert '"type": "hello"' in opened["hello"] and f'"collaborations": [{collab.pk}]' in opened["hello"]
    # Another site's page cannot ride on the researcher's cookie.
    assert _open(cookie, "https://evil.example") == {"code": 4401, "reason": "origin not allowed"}


def test_after_logout_the_old_session_cookie_opens_nothing(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    cookie = _session_cookie(client)
    client.post("/portal/logout/", {"csrfmiddlewaretoken": csrf_token(client)})
    assert _open(cookie, "http://testserver") == {"code": 4401, "reason": "not logged in"}
