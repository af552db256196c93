"""The node proxy: an algorithm container's only channel out.

One proxy per run, listening on a Unix socket in the folder of the forwarder slot the
run borrows (`<task_folder>/forwarders/slot-<n>/proxy.sock`, nodeagent/forwarders.py).
The slot's forwarder container (network `none`) mounts only that folder and relays
127.0.0.1:<proxy_port> to the socket (nodeagent/relay.py); the algorithm container
shares the forwarder's network namespace, so HOST/PORT reach the relay, and the relay
reaches nothing but this proxy.

The proxy speaks the vantage6 4.x algorithm client's calls and forwards them to the
Vantage API with the run's container token, which the server limits to the run's own
job and collaboration. It translates paths, bodies and answers between the two:

    GET  /organization?collaboration_id=   →  GET  /api/organizations/?collaboration=
    GET  /organization/<id>                →  GET  /api/organizations/<id>/
    POST /task                             →  POST /api/tasks/
    GET  /task/<id>[/status]               →  GET  /api/tasks/<id>/
    GET  /result?task_id=&page=            →  GET  /api/runs/?task=&page=&with_result=true
                                              (+ each larger result on its own)
    GET  /result/<id>, /run/<id>           →  GET  /api/runs/<id>/ (+ its result)
    GET  /blobstream/status                →  answered here: no blob store
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import socket
import socketserver
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from nodeagent.crypto import RunSealing, SealingError

log = logging.getLogger(__name__)

SOCKET_NAME = "proxy.sock"
TIMEOUT = (5, 60)
# What one run's container can make the agent hold: requests up to the server's own
# request limit (VANTAGE_MAX_REQUEST_BYTES, 20 MiB by default), answers from the server
# (results of subtasks, base64-encoded for the container) up to MAX_ANSWER, on at most
# MAX_CONNECTIONS connections at once; a client that stops sending is dropped after
# CLIENT_TIMEOUT seconds.
MAX_BODY = 20 * 1024 * 1024
MAX_ANSWER = 32 * 1024 * 1024
MAX_CONNECTIONS = 4
CLIENT_TIMEOUT = 30
BODY_METHODS = ("POST", "PUT", "PATCH")
# A small result comes inline with its run in the server's list; a larger one (kept in a
# file) is fetched on its own, this many at a time: a central method waits for the whole
# page between rounds, and one by one that was a server request per site in a row (issue
# 18). The page's results are held together either way (MAX_ANSWER each).
RESULT_FETCHES = 4
# A completed run's result never changes, and a central method polling a subtask's results
# asks for the finished ones again at every poll: up to this many bytes of opened results
# are kept per run's proxy rather than fetched and opened again.
RESULT_CACHE_BYTES = 8 * 1024 * 1024
# vantage6 4.x TaskStatus words for our derived task statuses.
V6_TASK_STATUS = {"pending": "pending", "active": "active", "completed": "completed", "failed": "failed",
                  "killed": "killed by user"}


class ProxyError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


@dataclass(frozen=True)
class Answer:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)


class Upstream:
    """The Vantage API as the run's container token may use it."""

    def __init__(self, server_url: str, token: str, sealing: RunSealing | None = None):
        self.url = server_url.rstrip("/")
        # Set in an encrypted collaboration: subtask inputs are sealed and results opened here.
        self.sealing = sealing
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.lock = threading.Lock()
        # (method, organisations) of each subtask created through this proxy: the node's own
        # account of what a central run asked of the sites (RunProxy.summary).
        self.subtasks: list[tuple[str, int]] = []
        self.results: dict[int, str] = {}  # run id → its opened result, base64 (RESULT_CACHE_BYTES)
        self.results_bytes = 0

    def remember_result(self, run_id: int, encoded: str) -> None:
        with self.lock:
            if run_id not in self.results and self.results_bytes + len(encoded) <= RESULT_CACHE_BYTES:
                self.results[run_id] = encoded
                self.results_bytes += len(encoded)

    def call(self, method: str, path: str, **kwargs) -> Answer:
        """The server's answer, read up to MAX_ANSWER bytes (a larger one is refused, not held)."""
        try:
            with self.session.request(method, f"{self.url}{path}", timeout=TIMEOUT, stream=True,
                                      **kwargs) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > MAX_ANSWER:
                    raise ProxyError(502, f"the server's answer ({declared} bytes) is larger than the node proxy "
                                          f"passes on ({MAX_ANSWER} bytes)")
                chunks, size = [], 0
                for chunk in response.iter_content(256 * 1024):
                    size += len(chunk)
                    if size > MAX_ANSWER:
                        raise ProxyError(502, f"the server's answer is larger than the node proxy passes on "
                                              f"({MAX_ANSWER} bytes)")
                    chunks.append(chunk)
                return Answer(response.status_code, b"".join(chunks))
        except requests.RequestException as exc:
            raise ProxyError(502, f"the server cannot be reached: {type(exc).__name__}")

    def json(self, method: str, path: str, **kwargs):
        response = self.call(method, path, **kwargs)
        if response.status_code >= 400:
            raise ProxyError(response.status_code, response.text[:2000])
        return response.json()


def _links(path: str, page: int, has_next: bool, query: str) -> dict:
    links = {"first": f"{path}?{query}page=1", "self": f"{path}?{query}page={page}"}
    if has_next:
        links["next"] = f"{path}?{query}page={page + 1}"
    if page > 1:
        links["previous"] = f"{path}?{query}page={page - 1}"
    return links


def _page(params: dict) -> int:
    try:
        return max(1, int(params.get("page", ["1"])[0]))
    except ValueError:
        raise ProxyError(400, "page must be a number")


def _one(params: dict, name: str) -> str:
    value = params.get(name, [""])[0]
    if not value.isdigit():
        raise ProxyError(400, f"{name} must be an id")
    return value


def _method_of(organizations: list) -> str:
    """vantage6 puts the method inside each organisation's base64 input."""
    for entry in organizations:
        try:
            decoded = json.loads(base64.b64decode(entry.get("input") or "", validate=True))
        except (binascii.Error, ValueError, AttributeError):
            raise ProxyError(400, "organizations[].input must be base64 of a JSON object with a method")
        if isinstance(decoded, dict) and isinstance(decoded.get("method"), str):
            return decoded["method"]
    raise ProxyError(400, "organizations[].input must name a method")


def translate(upstream: Upstream, method: str, path: str, query: str, body: bytes) -> tuple[int, dict]:
    """One vantage6 algorithm client call → (status, answer)."""
    params = parse_qs(query)
    parts = [p for p in path.split("/") if p]
    if method == "GET" and parts == ["blobstream", "status"]:
        return 200, {"blob_store_enabled": False}
    if method == "GET" and parts == ["organization"]:
        collaboration = _one(params, "collaboration_id")
        page = _page(params)
        found = upstream.json("GET", f"/api/organizations/?collaboration={collaboration}&page={page}")
        return 200, {"data": found.get("results", []),
                     "links": _links("/organization", page, bool(found.get("next")),
                                     f"collaboration_id={collaboration}&")}
    if method == "GET" and len(parts) == 2 and parts[0] == "organization" and parts[1].isdigit():
        return 200, upstream.json("GET", f"/api/organizations/{parts[1]}/")
    if method == "POST" and parts == ["task"]:
        return 201, _create_task(upstream, body)
    if method == "GET" and len(parts) in (2, 3) and parts[0] == "task" and parts[1].isdigit():
        task = upstream.json("GET", f"/api/tasks/{parts[1]}/")
        status = V6_TASK_STATUS.get(task.get("status"), task.get("status"))
        if len(parts) == 3:
            if parts[2] != "status":
                raise ProxyError(404, f"no such call: {path}")
            return 200, {"id": task.get("id"), "status": status}
        return 200, {**task, "status": status}
    if method == "GET" and parts in (["result"], ["run"]):
        return 200, _results(upstream, parts[0], _one(params, "task_id"), _page(params))
    if method == "GET" and len(parts) == 2 and parts[0] in ("result", "run") and parts[1].isdigit():
        run = upstream.json("GET", f"/api/runs/{parts[1]}/")
        return 200, _run_entry(upstream, run, _task_id(run.get("task")))
    raise ProxyError(404, f"the node proxy does not offer {method} {path}")


def _create_task(upstream: Upstream, body: bytes) -> dict:
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        raise ProxyError(400, "the body is not JSON")
    if not isinstance(request, dict) or not isinstance(request.get("organizations"), list):
        raise ProxyError(400, "organizations must be a list of {id, input}")
    organizations = [{"id": entry.get("id"), "input": entry.get("input")} for entry in request["organizations"]
                     if isinstance(entry, dict)]
    method = _method_of(organizations)
    if upstream.sealing is not None:
        organizations = [{"id": entry["id"], "input": _seal(upstream, entry)} for entry in organizations]
    payload = {"name": request.get("name") or "subtask", "method": method,
               "organizations": organizations, "description": request.get("description") or ""}
    if request.get("databases"):
        payload["databases"] = request["databases"]
    # Passed on for the server to check (it refuses any but the container's own with a 400),
    # never dropped: silently running the parent's image instead would hide the mistake.
    if request.get("collaboration_id") is not None:
        payload["collaboration"] = request["collaboration_id"]
    if request.get("image"):
        payload["image"] = request["image"]
    task = upstream.json("POST", "/api/tasks/", json=payload)
    with upstream.lock:
        upstream.subtasks.append((method, len(organizations)))
    status = V6_TASK_STATUS.get(task.get("status"), task.get("status"))
    return {**task, "id": task["id"], "status": status}


def _seal(upstream: Upstream, entry: dict) -> str:
    """One organisation's subtask input, sealed for that organisation's public key."""
    if isinstance(entry["id"], bool) or not isinstance(entry["id"], int):
        raise ProxyError(400, "organizations[].id must be an organisation id")
    try:
        plain = base64.b64decode(entry["input"] or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ProxyError(400, f"organizations[].input of organisation {entry['id']} is not base64")
    try:
        sealed = upstream.sealing.seal_input(
            entry["id"], plain, lambda org_id: upstream.json("GET", f"/api/organizations/{org_id}/"))
    except SealingError as exc:
        raise ProxyError(400, str(exc))
    return base64.b64encode(sealed).decode("ascii")


def _results(upstream: Upstream, kind: str, task_id: str, page: int) -> dict:
    found = upstream.json("GET", f"/api/runs/?task={task_id}&page={page}&with_result=true")
    runs = found.get("results", [])
    fetched = sum(1 for run in runs if _to_fetch(upstream, run))
    if fetched > 1:
        with ThreadPoolExecutor(max_workers=min(RESULT_FETCHES, fetched), thread_name_prefix="proxy-result") as pool:
            data = list(pool.map(lambda run: _run_entry(upstream, run, int(task_id)), runs))
    else:
        data = [_run_entry(upstream, run, int(task_id)) for run in runs]
    return {"data": data, "links": _links(f"/{kind}", page, bool(found.get("next")), f"task_id={task_id}&")}


def _to_fetch(upstream: Upstream, run: dict) -> bool:
    """A completed run whose result is neither in its list entry nor already opened here."""
    return run.get("status") == "completed" and run.get("result") is None and run.get("id") not in upstream.results


def _run_entry(upstream: Upstream, run: dict, task_id: int | None) -> dict:
    """A run as vantage6 shows a run or result: its result base64-encoded, once completed."""
    entry = {**run, "task": {"id": task_id}, "result": None}
    if run.get("status") != "completed":
        return entry
    if run["id"] in upstream.results:
        entry["result"] = upstream.results[run["id"]]
        return entry
    content = _inline_result(run)
    if content is None:
        response = upstream.call("GET", f"/api/runs/{run['id']}/result/")
        if response.status_code != 200:
            return entry
        content = response.content
    if upstream.sealing is not None:
        try:
            content = upstream.sealing.open_result(content)
        except SealingError as exc:
            raise ProxyError(502, str(exc))
    entry["result"] = base64.b64encode(content).decode("ascii")
    upstream.remember_result(run["id"], entry["result"])
    return entry


def _inline_result(run: dict) -> bytes | None:
    """The result the server put in the run's list entry (?with_result=true), or None."""
    inline = run.get("result")
    if inline is None:
        return None
    try:
        return base64.b64decode(inline, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ProxyError(502, f"the server's answer holds no readable result for run {run['id']}")


def _task_id(task) -> int | None:
    return task.get("id") if isinstance(task, dict) else task


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _UnixServer

    def _serve(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        prefix = self.server.api_path
        if prefix and path.startswith(prefix):
            path = path[len(prefix):]
        body = self._body()
        if body is None:
            return  # refused, and the connection is closed
        try:
            status, answer = translate(self.server.upstream, self.command, path, split.query, body)
        except ProxyError as exc:
            status, answer = exc.status, {"msg": exc.message}
        except Exception as exc:  # the algorithm gets an answer, the node a traceback
            log.exception("run %s: proxy error on %s %s", self.server.run_id, self.command, path)
            status, answer = 500, {"msg": f"node proxy error: {type(exc).__name__}"}
        log.debug("run %s: proxy %s %s -> %s", self.server.run_id, self.command, path, status)
        self._answer(status, answer)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def _body(self) -> bytes | None:
        """The request body, or None after refusing it: a body is read only when its length
        is declared, not negative and within MAX_BODY, and never past that length."""
        declared = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(411, "send a Content-Length; chunked bodies are not accepted")
        if declared is None:
            if self.command in BODY_METHODS:
                return self._refuse(411, "a request with a body needs a Content-Length")
            return b""
        if not declared.strip().isdigit():
            return self._refuse(400, f"Content-Length must be a whole number of bytes, not {declared[:40]!r}")
        length = int(declared)
        if length > MAX_BODY:
            return self._refuse(413, f"the body ({length} bytes) is larger than the node proxy takes ({MAX_BODY})")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None  # the client went away mid-body
        return body

    def _refuse(self, status: int, message: str) -> None:
        # The unread body stays in the socket: the connection cannot carry another request.
        self.close_connection = True
        self._answer(status, {"msg": message}, close=True)
        return None

    def _answer(self, status: int, answer: dict, close: bool = False) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:
        return f"run {self.server.run_id}"  # a Unix socket peer has no address

    def log_message(self, format, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass  # _serve logs each call


_BUSY_BODY = json.dumps({"msg": f"too many connections to the node proxy at once ({MAX_CONNECTIONS})"}).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, upstream: Upstream, run_id: int, api_path: str):
        self.upstream, self.run_id, self.api_path = upstream, run_id, api_path.rstrip("/")
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(path, _Handler)

    def process_request(self, request, client_address):
        """A connection beyond MAX_CONNECTIONS is answered 503 at once and closed: no thread,
        no buffer for it."""
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            request.settimeout(CLIENT_TIMEOUT)
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        """A container that hangs up before its answer is written gets one line, not the
        traceback socketserver prints to stderr; anything else is logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            log.info("run %s: the container closed its proxy connection early (%s)", self.run_id,
                     type(error).__name__)
        else:
            log.exception("run %s: the node proxy failed on a request", self.run_id)


class RunProxy:
    """The proxy of one run, serving in a thread until closed."""

    def __init__(self, *, socket_dir: Path, run_id: int, server_url: str, token: str, api_path: str = "",
                 sealing: RunSealing | None = None):
        self.socket_path = socket_dir / SOCKET_NAME
        if self.socket_path.exists():
            self.socket_path.unlink()  # left by an agent that stopped; this one serves anew
        self._server = _UnixServer(str(self.socket_path), Upstream(server_url, token, sealing), run_id, api_path)
        self._opened = time.monotonic()
        os.chmod(self.socket_path, 0o666)
        self._thread = threading.Thread(target=self._serve, name=f"proxy-{run_id}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Accept until close() shuts the listening socket down, which ends accept() at once.
        (serve_forever notices shutdown() only at its next poll, up to 0.5 s later, and every
        run's upload waited for that: the proxy closes before the run's slot is released.)"""
        while True:
            try:
                request, address = self._server.get_request()
            except OSError:
                return
            try:
                self._server.process_request(request, address)
            except Exception:
                self._server.handle_error(request, address)
                self._server.shutdown_request(request)

    def summary(self) -> str:
        """What the run asked of the sites through this proxy, for its log: written by the
        node, not the container, so it leaves whatever the output gate holds of the
        container's own log. Only what the server already knows (subtasks, their methods
        and organisation counts) and the time; empty when the run created no subtask."""
        upstream = self._server.upstream
        with upstream.lock:
            subtasks = list(upstream.subtasks)
        if not subtasks:
            return ""
        counts: dict[str, int] = {}
        for method, _organizations in subtasks:
            counts[method] = counts.get(method, 0) + 1
        methods = ", ".join(f"{method} ×{count}" for method, count in counts.items())
        rounds = len(subtasks)
        return (f"[node] central run: {rounds} round{'s' if rounds != 1 else ''} of subtasks ({methods}) "
                f"at up to {max(n for _m, n in subtasks)} organisations in {time.monotonic() - self._opened:.1f} s")

    def close(self) -> None:
        try:
            self._server.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut
        self._thread.join()
        self._server.server_close()

