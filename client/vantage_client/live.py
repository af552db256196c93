"""Following a task over the server's /ws/events/ websocket (the `live` extra)."""

from __future__ import annotations

import json
import logging
import time

from .errors import VantageError

log = logging.getLogger(__name__)

FINAL_TASK_STATUSES = ("completed", "failed", "killed")
QUIET_RECHECKS = 15  # poll intervals of silence before the task is read over HTTP again
RECONNECT_PAUSE = 1.0
MAX_FAILED_CONNECTS = 3  # in a row; then poll instead (a proxy that blocks websockets, say)

try:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.sync.client import connect
except ImportError:  # the client works without it, by polling
    connect = None


def available() -> bool:
    return connect is not None


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _ours(event: dict, task_id: int) -> bool:
    if event.get("type") == "run.updated":
        return (event.get("run") or {}).get("task") == task_id
    if event.get("type") in ("task.updated", "task.completed"):
        return (event.get("task") or {}).get("id") == task_id
    return False


def wait(client, task_id: int, deadline: float | None, progress, poll_interval: float) -> dict:
    """The task once final. Subscribes first and reads the status second, so an end
    before the subscription shows in the read, and one after it arrives as an event;
    a connection that drops is followed by a fresh read and a new connection."""
    url = client.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws/events/"
    quiet = poll_interval * QUIET_RECHECKS
    failures = 0
    while True:
        if failures >= MAX_FAILED_CONNECTS:
            log.info("events websocket unavailable; polling task %s instead", task_id)
            return client.tasks._poll(task_id, deadline, progress, poll_interval)
        try:
            with connect(url, additional_headers={"Authorization": f"Bearer {client.access_token}"},
                         open_timeout=10,
                         proxy=True if client.session.trust_env else None) as socket:
                socket.recv(timeout=10)  # the server's hello: from here on, events reach us
                failures = 0
                task = client.tasks.get(task_id)
                if task["status"] in FINAL_TASK_STATUSES:
                    return task
                while True:
                    remaining = _remaining(deadline)
                    if remaining == 0:
                        raise VantageError(f"task {task_id} did not finish in time (still {task['status']})")
                    wait_for = quiet if remaining is None else min(quiet, remaining)
                    try:
                        event = json.loads(socket.recv(timeout=wait_for))
                    except TimeoutError:
                        task = client.tasks.get(task_id)  # a quiet socket: make sure nothing was missed
                        if task["status"] in FINAL_TASK_STATUSES:
                            return task
                        continue
                    if not isinstance(event, dict) or not _ours(event, task_id):
                        continue
                    if progress is not None:
                        progress(event)
                    if event["type"] == "task.completed":
                        return client.tasks.get(task_id)
        except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
            log.info("events websocket for task %s lost (%s); reading the status and reconnecting", task_id, exc)
            failures += 1
            task = client.tasks.get(task_id)
            if task["status"] in FINAL_TASK_STATUSES:
                return task
            if _remaining(deadline) == 0:
                raise VantageError(f"task {task_id} did not finish in time (still {task['status']})") from None
            time.sleep(min(RECONNECT_PAUSE, _remaining(deadline) or RECONNECT_PAUSE))
