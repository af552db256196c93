"""A finished API request is freed by reference counting, not left to the cyclic collector.

The server's bridge empties a DRF request's view and requests once the response is
closed (vantage.wsgi_bridge._release), `_input` lets go of its serializer's fields and
the filter backend of its filter set. These tests run requests through Django's WSGI
handler as the bridge does and look at what Python's collector would have to find.
"""

import base64
import gc
import io
import json

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from accounts.authentication import node_access_token
from tasks.services import run_claim, run_start
from tests import factories
from vantage.wsgi_bridge import _release

# Objects each request makes that only cycles between them would keep alive.
REQUEST_TYPES = {"RunViewSet", "Request", "WSGIRequest", "RunFinishInlineSerializer", "RunFilter", "Response"}


@pytest.fixture
def handler(db):
    # As Django's test client does: the test's transaction must outlive each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _call(handler, method, path, *, token, query="", body=b"", release=True) -> int:
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": f"Bearer {token}", "REMOTE_ADDR": "127.0.0.1",
    }
    status = []
    response = handler(environ, lambda line, headers, exc_info=None: status.append(line))
    b"".join(response)
    response.close()
    if release:
        _release(response)
    return int(status[0].split()[0])


def _left_for_the_collector(request) -> set[str]:
    """Type names of what only the cyclic collector would free after `request()`."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        request()
        gc.collect()
        return {type(obj).__name__ for obj in gc.garbage} & REQUEST_TYPES
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.fixture
def running(owner, collab, org_a, node_a):
    """Two runs of org_a that node_a has started."""
    runs = []
    for name in ("first", "second"):
        run = factories.make_task(owner, collab, [org_a], name=name).runs.get()
        run_claim(run_id=run.pk, node=node_a)
        run_start(run_id=run.pk, node=node_a)
        runs.append(run)
    return runs


def _finish_body() -> bytes:
    result = base64.b64encode(b'{"count": 3}').decode()
    return json.dumps({"status": "completed", "exit_code": 0, "log": "done", "result": result}).encode()


def _two_finishes(handler, running, node_a, *, release=True) -> tuple[list[int], set[str]]:
    """Two finishes, the second watched. The schema object of an action documented with
    extend_schema keeps the latest view of that action (DRF's ViewInspector.__get__), so
    the first request's objects are let go of during the second."""
    token = str(node_access_token(node_a))
    first, second = running
    statuses = [_call(handler, "POST", f"/api/runs/{first.pk}/finish/", token=token, body=_finish_body(),
                      release=release)]
    left = _left_for_the_collector(lambda: statuses.append(_call(
        handler, "POST", f"/api/runs/{second.pk}/finish/", token=token, body=_finish_body(), release=release)))
    return statuses, left


def test_a_finish_request_leaves_nothing_for_the_collector(handler, running, node_a):
    statuses, left = _two_finishes(handler, running, node_a)
    assert statuses == [200, 200]
    assert left == set()


def test_without_the_release_the_request_waits_for_the_collector(handler, running, node_a):
    """What the release is for: DRF's view, request and response hold each other."""
    statuses, left = _two_finishes(handler, running, node_a, release=False)
    assert statuses == [200, 200]
    assert {"RunViewSet", "Request", "WSGIRequest", "Response"} <= left


def test_a_filtered_list_leaves_nothing_for_the_collector(handler, running, node_a):
    token = str(node_access_token(node_a))
    statuses = []
    list_runs = lambda: statuses.append(  # noqa: E731
        _call(handler, "GET", "/api/runs/", token=token, query="status=running&page_size=10"))
    list_runs()  # as for the finishes: the second is watched
    left = _left_for_the_collector(list_runs)
    assert statuses == [200, 200]
    assert left == set()


def test_a_refused_request_leaves_nothing_for_the_collector(handler, running, node_a):
    token = str(node_access_token(node_a))
    statuses = []
    body = json.dumps({"status": "finished-ish"}).encode()
    refused = lambda: statuses.append(  # noqa: E731
        _call(handler, "POST", f"/api/runs/{running[0].pk}/finish/", token=token, body=body))
    refused()
    left = _left_for_the_collector(refused)
    assert statuses == [400, 400]
    assert left == set()
