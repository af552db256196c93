"""What of a finished API request is left to Python's cyclic collector.

The filter backend lets go of its filter set. These tests run requests through Django's WSGI handler as the bridge does and look at
what the collector would have to find.
"""

import gc
import io

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from accounts.authentication import node_access_token
from tasks.services import run_claim, run_start
from tests import factories

# Objects each request makes that only cycles between them would keep alive. DRF's view,
# request and response hold each other and are left to the collector (freeing them by
# hand bought nothing measurable in bench/api.py, see bench/README.md), and the input
# serializer with them; the filter set's own cycle is broken where it is made.
REQUEST_TYPES = {"RunFilter"}


@pytest.fixture
def handler(db):
    # As Django's test client does: the test's transaction must outlive each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _call(handler, method, path, *, token, query="", body=b"") -> int:
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


def test_a_filtered_list_leaves_nothing_for_the_collector(handler, running, node_a):
    token = str(node_access_token(node_a))
    statuses = []
    list_runs = lambda: statuses.append(  # noqa: E731
        _call(handler, "GET", "/api/runs/", token=token, query="status=running&page_size=10"))
    list_runs()  # as for the finishes: the second is watched
    left = _left_for_the_collector(list_runs)
    assert statuses == [200, 200]
    assert left == set()
