"""The node's websocket (`/ws/node/`): hear about new runs and kill requests at once.

Only a shortcut: the agent also polls, so a lost event, a dropped connection or a
server without websockets delays work by at most one poll interval and never loses
it. The connection uses the node's REST token, sends heartbeats (which also keep the
node marked online) and reconnects with backoff.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from nodeagent.client import ClientError, ServerClient

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0
CLOSE_UNAUTHENTICATED = 4401
MAX_MESSAGE_BYTES = 1024 * 1024
# A refused connection costs the server nothing, and the websocket's return is what sends
# the outcomes held through an outage (nodeagent.job.ServerBack): retried at least this often.
RECONNECT_MAX_SECONDS = 5.0


class EventListener:
    def __init__(self, *, client: ServerClient, stop: threading.Event, on_new_run: Callable[[int], None],
                 on_reconnect: Callable[[], None], on_kill: Callable[[int], None], backoff: Callable[[int], float]):
        self.client = client
        self.stop = stop
        self.on_new_run = on_new_run
        self.on_reconnect = on_reconnect
        self.on_kill = on_kill
        self.backoff = backoff
        scheme, rest = client.url.split("://", 1)
        self.ws_url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/node/"
        self.thread: threading.Thread | None = None
        self.connected = threading.Event()  # set while the server's events reach us
        self._attempt = 0  # failed connections since the last one that worked

    def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name="events", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        self._attempt = 0
        while not self.stop.is_set():
            try:
                self._session()
                self._attempt = 0
            except ConnectionClosed as closed:
                code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "connection lost")
                log.info("websocket closed (%s %s); polling meanwhile", code, reason)
                if code == CLOSE_UNAUTHENTICATED:
                    self.client.invalidate_token()
            except (OSError, InvalidHandshake, ClientError) as exc:
                log.info("websocket %s unavailable (%s); polling meanwhile", self.ws_url, exc)
            finally:
                self.connected.clear()
            self._attempt += 1
            self.stop.wait(min(self.backoff(self._attempt), RECONNECT_MAX_SECONDS))

    def _session(self) -> None:
        headers = {"Authorization": f"Bearer {self.client.access_token()}"}
        with connect(self.ws_url, additional_headers=headers, open_timeout=10, close_timeout=2,
                     max_size=MAX_MESSAGE_BYTES) as ws:
            next_beat = 0.0
            while not self.stop.is_set():
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_SECONDS
                    ws.send(json.dumps({"type": "heartbeat"}))
                try:
                    message = ws.recv(timeout=1.0)
                except TimeoutError:
                    continue
                self._dispatch(message)

    def _dispatch(self, message: str) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "hello":
            log.info("websocket connected")
            self.connected.set()
            self._attempt = 0  # the next loss starts over at the shortest wait
            self.on_reconnect()  # catch up with whatever arrived while not connected
        elif kind == "run.created" and isinstance((event.get("run") or {}).get("id"), int):
            self.on_new_run(event["run"]["id"])
        elif kind == "run.kill" and isinstance(event.get("run"), int):
            self.on_kill(event["run"])
