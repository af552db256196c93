"""Request bodies read whole on the event loop, before the application runs.

An ASGI middleware (public ASGI spec only: the scope, receive and send) for HTTP:

- it reads the request's body into memory, or into a temporary file once it passes
  SPOOL_IN_MEMORY_BYTES, so that no slow client ever holds one of the threads that run
  Django: a body dripped one byte every two seconds costs a coroutine, not a worker;
- it answers without calling the application when the body cannot be had:
  400 for a Content-Length that is not a number, 413 past `max_body_bytes`, or
  `max_upload_bytes` for the paths that take uploads (the Content-Length checked up
  front, a chunked body counted as it arrives), 503 with
  Retry-After while `max_spooling` bodies are already arriving, 408 when the client
  stops sending for `idle_seconds` or falls behind its deadline: `timeout_seconds` plus
  one second per `min_rate` bytes received, so a client that keeps up the minimum rate
  is never cut off, and one that drips cannot hold a slot past the grace time;
- a client that goes away mid-body gives one INFO line, not a traceback;
- the application then gets the whole body, twice over: from `receive` as usual (one
  message per MiB, then the real channel for the disconnect), and as a file in
  `scope["extensions"]["vantage.body"]` (`{"file": ..., "length": ...}`) for an
  application that would rather read it in place (vantage.wsgi_bridge) than copy it;
- the body's file is closed, and a temporary file with it deleted, when the request
  ends, whatever happened.

A refusal closes the connection (`Connection: close`): the rest of the body is never read.
"""

import asyncio
import io
import json
import logging
import re
import tempfile

log = logging.getLogger("vantage.http")

SPOOL_IN_MEMORY_BYTES = 1024 * 1024
REPLAY_CHUNK = 1024 * 1024
RETRY_AFTER_SECONDS = 5


class CompleteBody:
    def __init__(self, app, *, max_body_bytes: int, timeout_seconds: float, idle_seconds: float, min_rate: int,
                 max_spooling: int, upload_paths: re.Pattern | None = None, max_upload_bytes: int = 0):
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Only the paths that take files may send large bodies: elsewhere a client could
        # otherwise make the server write up to the upload limit to disk before Django,
        # which would refuse it, ever looked at the request.
        self.upload_paths = upload_paths
        self.max_upload_bytes = max_upload_bytes
        self.timeout_seconds = timeout_seconds
        self.idle_seconds = idle_seconds
        self.min_rate = min_rate
        self.max_spooling = max_spooling
        self.spooling = 0  # bodies being read now; one event loop, so a plain counter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    return await _answer(send, 400, "The Content-Length header is not a byte count.", "bad_request")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        limit = self.max_body_bytes
        if self.upload_paths is not None and self.upload_paths.search(scope["path"]):
            limit = max(limit, self.max_upload_bytes)
        if length is not None and length > limit:
            return await _answer(send, 413, _too_large(limit), "too_large")
        if length or chunked:
            if self.spooling >= self.max_spooling:
                return await _answer(send, 503, "The server is busy receiving other requests; try again shortly.",
                                     "busy", retry_after=True)
            self.spooling += 1
            try:
                body = await self._read(scope, receive, send, length, limit)
            finally:
                self.spooling -= 1
            if body is None:
                return  # answered, or the client went away
        else:
            # No body announced: the one (empty) request message is already there.
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = io.BytesIO(message.get("body", b""))
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        try:
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}),
                                             "vantage.body": {"file": body, "length": size}}}
            await self.app(scope, _Replay(body, size, receive), send)
        finally:
            body.close()

    async def _read(self, scope, receive, send, length, limit):
        """The whole body as a file at position 0; None once answered (408, 413) or the client left."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        received = 0
        spool = None
        try:
            while True:
                # The deadline moves with what has arrived: a grace time plus min_rate.
                left = started + self.timeout_seconds + received / self.min_rate - loop.time()
                try:
                    async with asyncio.timeout(min(left, self.idle_seconds)):
                        message = await receive()
                except TimeoutError:
                    log.info("%s %s: body not received in time (%d of %s bytes), answered 408", scope["method"],
                             scope["path"], received, length if length is not None else "?")
                    await _answer(send, 408, "The request body did not arrive in time.", "timeout")
                    return None
                if message["type"] == "http.disconnect":
                    log.info("%s %s: client went away after %d of %s bytes of the body", scope["method"],
                             scope["path"], received, length if length is not None else "?")
                    return None
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                received += len(chunk)
                if received > limit:
                    await _answer(send, 413, _too_large(limit), "too_large")
                    return None
                if spool is None:
                    if not more:
                        return io.BytesIO(chunk)  # the usual small body, whole in its first message
                    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
                spool.write(chunk)
                if not more:
                    body, spool = spool, None
                    return body
        finally:
            if spool is not None:  # not handed on: answered, or the client left
                spool.close()


class _Replay:
    """The receive channel after the body was read: the body again, then the real channel."""

    __slots__ = ("_body", "_left", "_receive")

    def __init__(self, body, size: int, receive):
        self._body = body
        self._left = size
        self._receive = receive

    async def __call__(self):
        if self._left is None:
            return await self._receive()  # only http.disconnect is left to come
        chunk = self._body.read(REPLAY_CHUNK) if self._left else b""
        self._left -= len(chunk)
        more = self._left > 0
        if not more:
            self._left = None
            self._body.seek(0)  # for whoever reads the file in place after all
        return {"type": "http.request", "body": chunk, "more_body": more}


def _too_large(limit: int) -> str:
    return f"The request body exceeds {limit} bytes."


async def _answer(send, status: int, detail: str, code: str, *, retry_after: bool = False) -> None:
    content = json.dumps({"detail": detail, "code": code}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
               (b"connection", b"close")]
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
