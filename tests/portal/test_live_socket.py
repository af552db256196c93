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


def test_logging_out_closes_the_sockets_of_that_session_only(owner):
    from asgiref.sync import sync_to_async

    leaving, staying = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    leaving.force_login(owner)
    staying.force_login(owner)

    async def connect(client):
        comm = WebsocketCommunicator(application, "/ws/events/", headers=[
            (b"cookie", _session_cookie(client).encode()), (b"origin", b"http://testserver")])
        connected, _ = await comm.connect()
        assert connected
        assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
        return comm

    async def scenario():
        other_tab, other_browser = await connect(leaving), await connect(staying)
        token = await sync_to_async(csrf_token)(leaving)
        await sync_to_async(leaving.post)("/portal/logout/", {"csrfmiddlewaretoken": token})
        closed = await other_tab.receive_output(timeout=5)
        still_open = await other_browser.receive_nothing(0.5)
        await other_browser.disconnect()
        return closed, still_open

    closed, still_open = async_to_sync(scenario)()
    assert (closed["type"], closed.get("code"), closed.get("reason")) == ("websocket.close", 4401, "logged out")
    assert still_open
