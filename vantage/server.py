"""Run daphne with request and response bodies kept out of memory.

    python -m vantage.server [daphne options] vantage.asgi:application

Takes every daphne command-line option. Stock daphne 4.2 (Twisted 26) holds whole
bodies in memory: a 1 GiB result upload through it peaked at 13.4 GiB of RSS and took
160 s; a 1 GiB download to a client pausing for 3 s at 330 MiB
(tests/live/test_result_streaming.py measures both). Three causes:

- Multipart requests: Twisted itself reads the whole body into memory and parses it
  into `request.args`, which daphne never uses. Here that parsing is switched off.
- Requests: Twisted spools the body to a temporary file; daphne then reads all of that
  file into the application's input queue at once, before the application runs. Here
  the application receives the body from the spool file, one chunk per `receive()`,
  and daphne finds nothing left to copy.
- Chunked requests: daphne passes no Content-Length, and Django parses no form without
  one. The body is fully spooled by then, so its length is known and passed on.
- Responses: daphne writes each body chunk to the connection's buffer at once, however
  slowly the client reads, so a file streamed to a slow client piles up in memory. Here
  sending waits while Twisted reports that buffer full (a registered push producer).
"""

import asyncio
import gc
import weakref

import uvloop

# Daphne runs Twisted on the asyncio loop it creates when daphne.server is imported:
# uvloop's loop in C instead of asyncio's in Python takes about 5 % off a small API
# request's CPU (bench/api.py, same run).
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from daphne.cli import CommandLineInterface  # noqa: E402
from daphne.server import Server  # noqa: E402
from twisted.internet.interfaces import IPushProducer  # noqa: E402
from twisted.web import http  # noqa: E402
from zope.interface import implementer  # noqa: E402

BODY_CHUNK_BYTES = 256 * 1024


class SpooledBody:
    """Serves a request body from Twisted's spool file, then daphne's own messages.

    Daphne's queue still carries an `http.request` message (empty, since the file is
    left at its end); it is dropped, and disconnects pass through.
    """

    def __init__(self, file, size: int, queue_receive):
        self._file = file
        self._size = size
        self._offset = 0
        self._done = False
        self._queue_receive = queue_receive

    async def receive(self) -> dict:
        if not self._done:
            if self._file.closed:  # Twisted closes it when the client goes away
                self._done = True
                return {"type": "http.disconnect"}
            self._file.seek(self._offset)
            chunk = self._file.read(min(BODY_CHUNK_BYTES, self._size - self._offset))
            self._offset += len(chunk)
            self._done = self._offset >= self._size
            return {"type": "http.request", "body": chunk, "more_body": not self._done}
        while True:
            message = await self._queue_receive()
            if message["type"] != "http.request":
                return message


@implementer(IPushProducer)
class WriteGate:
    """Open while the connection's send buffer has room; Twisted pauses and resumes it."""

    def __init__(self):
        self.open = asyncio.Event()
        self.open.set()

    def pauseProducing(self):
        self.open.clear()

    def resumeProducing(self):
        self.open.set()

    def stopProducing(self):
        self.open.set()  # the connection is gone: nothing may wait on it any more


def _no_twisted_access_log(request) -> None:
    pass


# Python's cyclic collector ran ~160 times per 1,000 small requests here, each pass
# walking the tens of thousands of objects Django, DRF and the app loaded at start: 0.12
# ms of a claim's 1.7 ms. Those objects live as long as the process, so they are moved
# out of the collector's sight once the application is loaded (gc.freeze), and the
# youngest generation is collected after 20,000 new container objects instead of 700:
# 0.04 ms per claim (bench/README.md). Garbage cycles are still collected, only in
# larger batches.
GC_THRESHOLDS = (20_000, 20, 20)


class StreamingServer(Server):
    def __init__(self, application, *args, **kwargs):
        super().__init__(self._application_with_spooled_body, *args, **kwargs)
        # Daphne's command line has imported the application (Django, every app) by now.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self._inner_application = application
        self._spooled = {}
        self._gates = weakref.WeakKeyDictionary()

    # Twisted's HTTP factory formats a combined-log line for every request and hands it to
    # Twisted's logging, which nothing here reads (daphne writes its own access log when
    # asked, with --access-log): a few percent of a small request's CPU. Daphne assigns
    # the factory in run(); this property takes that line out as it does.
    @property
    def http_factory(self):
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory):
        factory.log = _no_twisted_access_log
        self._http_factory = factory

    def protocol_connected(self, protocol):
        super().protocol_connected(protocol)
        if isinstance(protocol, http.Request):
            # Daphne calls this right after Request.__init__, which offers no other way in
            # for its `parsePOSTFormSubmission` argument.
            protocol._parsePOSTFormSubmission = False

    def create_application(self, protocol, scope):
        body = getattr(protocol, "content", None)
        if scope.get("type") != "http" or body is None:
            return super().create_application(protocol, scope)
        size = body.seek(0, 2)  # left at the end: daphne's own copying loop reads nothing
        if not any(name == b"content-length" for name, _ in scope["headers"]):
            scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"transfer-encoding"]
            scope["headers"].append((b"content-length", str(size).encode()))
        self._spooled[id(scope)] = (body, size)
        try:
            return super().create_application(protocol, scope)
        finally:
            self._spooled.pop(id(scope), None)

    def _application_with_spooled_body(self, scope, receive, send):
        spooled = self._spooled.pop(id(scope), None)
        if spooled is not None:
            receive = SpooledBody(*spooled, receive).receive
        return self._inner_application(scope=scope, receive=receive, send=send)

    async def handle_reply(self, protocol, message):
        is_body = message.get("type") == "http.response.body"
        more_body = is_body and message.get("more_body", False)
        connected = getattr(protocol, "channel", None) is not None
        gate = self._gates.get(protocol)
        if is_body and not more_body and gate is not None:
            # Before daphne finishes the response, which refuses a registered producer.
            del self._gates[protocol]
            if connected:
                protocol.unregisterProducer()
        elif more_body and gate is None and connected:
            gate = self._gates[protocol] = WriteGate()
            protocol.registerProducer(gate, True)
        await super().handle_reply(protocol, message)
        if more_body and gate is not None:
            await gate.open.wait()


class StreamingCommandLineInterface(CommandLineInterface):
    server_class = StreamingServer


if __name__ == "__main__":
    StreamingCommandLineInterface.entrypoint()
