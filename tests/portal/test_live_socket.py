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


def _open(cookie: str, origin: str, host: str = "testserver", scheme: str = "ws"):
    async def scenario():
        comm = WebsocketCommunicator(application, "/ws/events/", headers=[
            (b"cookie", cookie.encode()), (b"origin", origin.encode()), (b"host", host.encode())])
        comm.scope["scheme"] = scheme
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


@pytest.mark.parametrize("origin, host, scheme", [
    ("http://testserver:8080", "testserver", "ws"),     # another port on the same host
    ("https://testserver", "testserver", "ws"),         # another scheme
    ("http://testserver", "testserver", "wss"),         # plain http page, TLS socket
    ("http://testserver", "testserver:8000", "ws"),     # the server listens on another port
    ("http://evil.example", "evil.example", "ws"),      # a host outside ALLOWED_HOSTS
    ("http://testserver:99999", "testserver", "ws"),    # malformed
    ("null", "testserver", "ws"),
])
def test_the_origin_must_match_scheme_host_and_port(owner, origin, host, scheme):
    client = Client()
    client.force_login(owner)
    assert _open(_session_cookie(client), origin, host, scheme) == {"code": 4401, "reason": "origin not allowed"}


@pytest.mark.parametrize("origin, host, scheme", [
    ("http://testserver:8000", "testserver:8000", "ws"),
    ("https://testserver", "testserver", "wss"),
    ("https://testserver:443", "testserver", "wss"),
    ("http://TestServer", "testserver", "ws"),
])
def test_the_servers_own_origin_is_allowed(owner, origin, host, scheme):
    client = Client()
    client.force_login(owner)
    assert "hello" in _open(_session_cookie(client), origin, host, scheme)


def test_a_trusted_origin_behind_a_tls_proxy_is_allowed(owner, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://vantage.example.org"]
    settings.ALLOWED_HOSTS = ["testserver", "vantage.example.org"]
    client = Client()
    client.force_login(owner)
    assert "hello" in _open(_session_cookie(client), "https://vantage.example.org", "vantage.example.org", "ws")


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
            (b"cookie", _session_cookie(client).encode()), (b"origin", b"http://testserver"),
            (b"host", b"testserver")])
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
