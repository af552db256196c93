"""HTTP under the ASGI server without Django's per-request thread.

Django's ASGIHandler runs every sync view in a fresh thread-sensitive context, which
starts and joins a thread per request and hops threads for each signal: measured at
3-4 ms of CPU per request here, more than a whole organisation list costs. This bridge
hands each request to Django's WSGI handler on a fixed pool of worker threads instead
(each keeping its database connection), while the server keeps serving websockets
through Channels on the same port.

The body is read whole on the event loop first (vantage.body.CompleteBody), so a worker
thread runs only once there is nothing left to wait for from the client. Streaming
responses are sent chunk by chunk with back-pressure, so large downloads stay out of
memory.

Every hop between the event loop and a worker thread wakes the other side (a pipe
write, a lock, a GIL hand-over): about 0.1-0.2 ms of CPU each on these machines. So a
response that is not streamed comes back whole as the thread's result: one hop there,
one back.
"""

import asyncio
import queue
import sys
import threading

from core import events

DOWNLOAD_CHUNK = 1024 * 1024


class _FileWrapper:
    """wsgi.file_wrapper: stream files in large chunks rather than FileResponse's 4 KiB."""

    def __init__(self, filelike, block_size=DOWNLOAD_CHUNK):
        self.filelike = filelike
        self.block_size = max(block_size, DOWNLOAD_CHUNK)
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        while True:
            chunk = self.filelike.read(self.block_size)
            if not chunk:
                return
            yield chunk


class WSGIBridge:
    """Django's WSGI handler on a fixed pool of threads, behind vantage.body.CompleteBody.

    The body is complete before the request reaches its thread (the file in
    scope["extensions"]["vantage.body"]), so a worker never waits on a client.
    """

    def __init__(self, wsgi_application, *, threads: int):
        self.wsgi_application = wsgi_application
        self.workers = _WorkerPool(threads, name="http")

    async def __call__(self, scope, receive, send):
        loop = asyncio.get_running_loop()
        events.attach_to_loop(loop)
        whole = await self.workers.run(loop, self._run, scope, send, loop)
        if whole is not None:
            start, content = whole
            await send(start)
            await send({"type": "http.response.body", "body": content})

    def _run(self, scope, send, loop) -> tuple[dict, bytes] | None:
        """Run the request; a response that is not streamed is returned whole, the others are sent here."""
        def sync_send(message):
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        started = {}

        def start_response(status, headers, exc_info=None):
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            code = int(status.split(" ", 1)[0])
            started["message"] = {
                "type": "http.response.start",
                "status": code,
                "headers": [(k.lower().encode("latin1"), v.encode("latin1")) for k, v in headers],
            }
            return lambda data: None  # the legacy write() callable; Django never uses it

        response = self.wsgi_application(_environ(scope, scope["extensions"]["vantage.body"]), start_response)
        if getattr(response, "streaming", True) is False:
            try:
                content = b"".join(response)
            finally:
                response.close()  # in this thread: it ends the request (signals, database connection)
            return started["message"], content
        try:
            for chunk in response:
                if not chunk:
                    continue
                if "sent" not in started:
                    sync_send(started["message"])
                    started["sent"] = True
                sync_send({"type": "http.response.body", "body": chunk, "more_body": True})
            if "sent" not in started:
                sync_send(started["message"])
            sync_send({"type": "http.response.body"})
        finally:
            if hasattr(response, "close"):
                response.close()


class _WorkerPool:
    """Threads taking calls from one queue, each call's outcome set on its loop's future.

    What run_in_executor does, without a concurrent.futures.Future and the callbacks that
    chain it to an asyncio one: 92 instead of 120 us of CPU for a trivial request through
    the bridge (bench/README.md). The threads start with the first call, so a process
    that imports the application without serving HTTP starts none.
    """

    def __init__(self, threads: int, *, name: str):
        self._size = threads
        self._name = name
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()

    def run(self, loop, function, *args) -> asyncio.Future:
        if not self._started:
            self._start()
        future = loop.create_future()
        self._calls.put((loop, future, function, args))
        return future

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for i in range(self._size):
                # Daemon threads: a request still running when the server exits (after its
                # graceful-shutdown wait) is cut off, and its open transaction rolls back.
                threading.Thread(target=self._work, name=f"{self._name}_{i}", daemon=True).start()
            self._started = True

    def _work(self) -> None:
        while True:
            loop, future, function, args = self._calls.get()
            try:
                outcome = (function(*args), None)
            except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine, as run_in_executor does
                outcome = (None, error)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:  # the loop has closed: nobody awaits the outcome any more
                pass
            del loop, future, function, args, outcome  # hold nothing of a finished request while idle


def _settle(future: asyncio.Future, result, error) -> None:
    if future.cancelled():  # the request's task was cancelled meanwhile (client gone, shutdown)
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _environ(scope, body: dict) -> dict:
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.encode("utf8").decode("latin1"),
        "PATH_INFO": path.encode("utf8").decode("latin1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("ascii"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body["file"],
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": _FileWrapper,
    }
    server = scope.get("server") or ("localhost", 80)
    environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1] or 0)
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for name, value in scope.get("headers", []):
        if b"_" in name:
            # X_Forwarded_For would pass for X-Forwarded-For once names are mapped to
            # WSGI's HTTP_* keys, so names with underscores are dropped (CVE-2015-0219).
            continue
        key = name.decode("latin1").upper().replace("-", "_")
        value = value.decode("latin1")
        if key == "CONTENT_TYPE":
            environ[key] = value
            continue
        if key == "CONTENT_LENGTH":
            continue  # the length of the body as received, below
        key = f"HTTP_{key}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    # Also for a chunked body, whose length Django needs to parse a form.
    environ["CONTENT_LENGTH"] = str(body["length"])
    return environ
