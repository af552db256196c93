"""The node proxy over its Unix socket: vantage6's calls in, Vantage API calls out.

The Vantage API is a small fake HTTP server on loopback that records what it was asked
with which token; the end-to-end run through real containers is in test_live.py.
"""

import base64
import json
import socket
import threading
import time
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nodeagent import proxy
from nodeagent.proxy import RunProxy

TOKEN = "container.token.jwt"


class FakeApi(BaseHTTPRequestHandler):
    calls: list = []
    answers: dict = {}

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        FakeApi.calls.append((self.command, self.path, self.headers.get("Authorization"), body))
        status, answer = FakeApi.answers.get((self.command, self.path), (404, {"detail": "Not found."}))
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, *args):
        pass


class Api:
    """The fake API's recorded calls and canned answers."""

    def __init__(self, port):
        self.port = port
        self.calls = FakeApi.calls
        self.answers = FakeApi.answers


@pytest.fixture
def api():
    FakeApi.calls, FakeApi.answers = [], {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Api(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def running(api, tmp_path):
    made = RunProxy(socket_dir=tmp_path, run_id=7, server_url=f"http://127.0.0.1:{api.port}", token=TOKEN)
    yield made
    made.close()


class UnixConnection(HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def ask(proxy, method, path, body=None):
    connection = UnixConnection(str(proxy.socket_path))
    data = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def encoded(method):
    return base64.b64encode(json.dumps({"method": method, "args": [], "kwargs": {}}).encode()).decode()


def test_organizations_of_the_collaboration_are_listed_as_vantage6_pages(running, api):
    api.answers[("GET", "/api/organizations/?collaboration=3&page=1")] = (
        200, {"count": 2, "next": None, "results": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}]})
    status, answer = ask(running, "GET", "/organization?collaboration_id=3")
    assert status == 200
    assert answer["data"] == [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}]
    assert "next" not in answer["links"]
    assert api.calls[0][2] == f"Bearer {TOKEN}"


def test_a_vantage6_task_becomes_a_vantage_subtask_with_the_method_from_its_input(running, api):
    api.answers[("POST", "/api/tasks/")] = (201, {"id": 12, "status": "pending"})
    status, answer = ask(running, "POST", "/task", {
        "name": "sub", "image": "x", "collaboration_id": 3, "description": "d",
        "organizations": [{"id": 1, "input": encoded("partial")}, {"id": 2, "input": encoded("partial")}],
        "databases": [{"label": "default"}]})
    assert (status, answer["id"], answer["status"]) == (201, 12, "pending")
    method, path, _, body = api.calls[0]
    assert (method, path) == ("POST", "/api/tasks/")
    # Image and collaboration go on for the server to check (it refuses any but the container's own).
    assert body == {"name": "sub", "method": "partial", "description": "d", "databases": [{"label": "default"}],
                    "organizations": [{"id": 1, "input": encoded("partial")}, {"id": 2, "input": encoded("partial")}],
                    "image": "x", "collaboration": 3}


def test_a_task_input_that_is_not_base64_json_is_refused_with_400(running, api):
    status, answer = ask(running, "POST", "/task", {"organizations": [{"id": 1, "input": "%%%"}]})
    assert status == 400 and "base64" in answer["msg"]
    assert api.calls == []


@pytest.mark.parametrize("ours, theirs", [("active", "active"), ("completed", "completed"),
                                          ("failed", "failed"), ("killed", "killed by user")])
def test_task_status_uses_vantage6_words(running, api, ours, theirs):
    api.answers[("GET", "/api/tasks/12/")] = (200, {"id": 12, "status": ours})
    assert ask(running, "GET", "/task/12/status") == (200, {"id": 12, "status": theirs})
    assert ask(running, "GET", "/task/12")[1]["status"] == theirs


def test_results_are_base64_json_per_run_with_a_next_link_when_there_is_more(running, api):
    api.answers[("GET", "/api/runs/?task=12&page=1&with_result=true")] = (200, {"next": "http://x/api/runs/?task=12&page=2", "results": [
        {"id": 40, "status": "completed", "organization": 1}, {"id": 41, "status": "running", "organization": 2}]})
    api.answers[("GET", "/api/runs/40/result/")] = (200, b'{"rows": 3}')
    status, answer = ask(running, "GET", "/result?task_id=12")
    assert status == 200
    first, second = answer["data"]
    assert json.loads(base64.b64decode(first["result"])) == {"rows": 3}
    assert (first["id"], first["task"]) == (40, {"id": 12})
    assert second["result"] is None
    assert answer["links"]["next"] == "/result?task_id=12&page=2"


def test_a_page_of_many_results_keeps_the_runs_order_and_a_failed_fetch_fails_the_call(running, api, monkeypatch):
    runs = [{"id": 50 + i, "status": "completed" if i != 3 else "running", "organization": i} for i in range(7)]
    api.answers[("GET", "/api/runs/?task=13&page=1&with_result=true")] = (200, {"next": None, "results": runs})
    for run in runs:
        api.answers[("GET", f"/api/runs/{run['id']}/result/")] = (200, json.dumps({"site": run["organization"]}).encode())
    status, answer = ask(running, "GET", "/result?task_id=13")
    assert status == 200
    assert [entry["id"] for entry in answer["data"]] == [run["id"] for run in runs]
    assert [entry["result"] and json.loads(base64.b64decode(entry["result"]))["site"] for entry in answer["data"]] == [
        0, 1, 2, None, 4, 5, 6]
    fetched = sorted(path for _, path, _, _ in api.calls if path.endswith("/result/"))
    assert fetched == sorted(f"/api/runs/{run['id']}/result/" for run in runs if run["status"] == "completed")
    # One result larger than the proxy passes on (a smaller limit, for a small test): the call fails, as before.
    monkeypatch.setattr(proxy, "MAX_ANSWER", 1000)
    runs[3]["status"] = "completed"
    api.answers[("GET", "/api/runs/53/result/")] = (200, b"x" * 1001)
    api.calls.clear()
    assert ask(running, "GET", "/result?task_id=13")[0] == 502
    # The results it had opened were not fetched again: a completed run's result never changes.
    assert [path for _, path, _, _ in api.calls if path.endswith("/result/")] == ["/api/runs/53/result/"]


def test_results_inline_in_the_run_list_are_passed_on_without_a_fetch_each(running, api):
    api.answers[("GET", "/api/runs/?task=14&page=1&with_result=true")] = (200, {"next": None, "results": [
        {"id": 60, "status": "completed", "organization": 1, "result": base64.b64encode(b'{"n": 1}').decode()},
        # Kept in a file by the server (larger than it keeps in the row): fetched on its own.
        {"id": 61, "status": "completed", "organization": 2, "result": None},
        {"id": 62, "status": "running", "organization": 3, "result": None}]})
    api.answers[("GET", "/api/runs/61/result/")] = (200, b'{"n": 2}')
    status, answer = ask(running, "GET", "/result?task_id=14")
    assert status == 200
    assert [entry["result"] and json.loads(base64.b64decode(entry["result"])) for entry in answer["data"]] == [
        {"n": 1}, {"n": 2}, None]
    assert [path for _, path, _, _ in api.calls if path.endswith("/result/")] == ["/api/runs/61/result/"]


def test_an_unreadable_inline_result_is_an_error_for_the_algorithm(running, api):
    api.answers[("GET", "/api/runs/?task=15&page=1&with_result=true")] = (200, {"next": None, "results": [
        {"id": 70, "status": "completed", "organization": 1, "result": "not base64!"}]})
    status, answer = ask(running, "GET", "/result?task_id=15")
    assert (status, answer["msg"]) == (502, "the server's answer holds no readable result for run 70")


def test_one_result_or_run_by_id_carries_its_base64_result_and_task(running, api):
    api.answers[("GET", "/api/runs/40/")] = (200, {"id": 40, "status": "completed", "task": 12})
    api.answers[("GET", "/api/runs/40/result/")] = (200, b'{"rows": 3}')
    for kind in ("result", "run"):
        status, answer = ask(running, "GET", f"/{kind}/40")
        assert status == 200
        assert json.loads(base64.b64decode(answer["result"])) == {"rows": 3}
        assert (answer["id"], answer["task"]) == (40, {"id": 12})
    api.answers[("GET", "/api/runs/41/")] = (404, {"detail": "Not found."})
    assert ask(running, "GET", "/result/41")[0] == 404


def test_blob_store_is_reported_disabled_without_asking_the_server(running, api):
    assert ask(running, "GET", "/blobstream/status") == (200, {"blob_store_enabled": False})
    assert api.calls == []


def test_server_refusals_reach_the_algorithm_with_their_status(running, api):
    status, _ = ask(running, "GET", "/task/99/status")
    assert status == 404


def test_anything_else_is_not_offered(running, api):
    status, answer = ask(running, "GET", "/api/users/")
    assert status == 404 and "does not offer" in answer["msg"]
    assert api.calls == []


def test_the_socket_is_open_to_the_forwarder_user(running):
    assert running.socket_path.stat().st_mode & 0o777 == 0o666


def test_close_ends_the_serving_thread_and_refuses_new_connections(api, tmp_path):
    proxy = RunProxy(socket_dir=tmp_path, run_id=7, server_url=f"http://127.0.0.1:{api.port}", token=TOKEN)
    assert ask(proxy, "GET", "/blobstream/status")[0] == 200
    proxy.close()
    # close() returns only once the accepting thread is gone: the slot may be lent at once.
    assert not proxy._thread.is_alive()
    with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(proxy.socket_path))


def raw(proxy, head: bytes, body: bytes = b"", *, timeout: float = 10) -> tuple[int, dict]:
    """Send bytes as they are (lengths that http.client would never write) and read the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(proxy.socket_path))
        try:
            client.sendall(head + b"\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before reading (a 503 beyond the connection bound): read it
        data = b""
        while chunk := client.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                header, _, rest = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in header.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                if len(rest) >= length:
                    return int(header.split(b" ")[1]), json.loads(rest[:length])
    raise AssertionError(f"no full answer: {data[:200]!r}")


@pytest.mark.parametrize("headers, status, message", [
    (b"Content-Length: -1\r\n", 400, "Content-Length must be a whole number"),
    (b"Content-Length: 1e9\r\n", 400, "Content-Length must be a whole number"),
    (b"", 411, "needs a Content-Length"),
    (b"Transfer-Encoding: chunked\r\n", 411, "chunked bodies are not accepted"),
    (b"Content-Length: 419430400\r\n", 413, "larger than the node proxy takes"),
])
def test_bodies_without_a_usable_length_are_refused_before_any_is_read(running, api, headers, status, message):
    answer = raw(running, b"POST /task HTTP/1.1\r\nHost: x\r\n" + headers, b"x" * 65536)
    assert answer[0] == status and message in answer[1]["msg"]
    assert api.calls == []


def test_connections_beyond_the_bound_are_answered_503_at_once(running, api, monkeypatch):
    from nodeagent import proxy
    idle = []
    for _ in range(proxy.MAX_CONNECTIONS):  # each holds a handler thread, sending nothing
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(running.socket_path))
        client.sendall(b"GET /blobstream/status HTTP/1.1\r\n")
        idle.append(client)
    try:
        status, answer = raw(running, b"GET /blobstream/status HTTP/1.1\r\nHost: x\r\n")
        assert status == 503 and "too many connections" in answer["msg"]
    finally:
        for client in idle:
            client.close()
    deadline = time.monotonic() + 15  # the handlers notice the closed connections and free their slots
    while time.monotonic() < deadline:
        status, _ = raw(running, b"GET /blobstream/status HTTP/1.1\r\nHost: x\r\n")
        if status == 200:
            break
        time.sleep(0.05)
    assert status == 200


def test_an_answer_from_the_server_larger_than_the_bound_is_refused_not_held(running, api, monkeypatch):
    from nodeagent import proxy
    monkeypatch.setattr(proxy, "MAX_ANSWER", 4096)
    api.answers[("GET", "/api/organizations/3/")] = (200, b"[" + b"0," * 10000 + b"0]")
    status, answer = ask(running, "GET", "/organization/3")
    assert status == 502 and "larger than the node proxy passes on" in answer["msg"]
