"""Following a task over the server's /ws/events/ websocket (the `live` extra)."""

from __future__ import annotations

import json
import logging
import time

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
    a connection that drops is followed by a fresh read and a new connection. While
    the server is away (a restart), it keeps trying until the deadline."""
    url = client.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws/events/"
    quiet = poll_interval * QUIET_RECHECKS
    tasks = client.tasks
    last = None  # the last status read, for the timeout message
    failures = 0  # websocket failures in a row while HTTP answered
    while True:
        if failures >= MAX_FAILED_CONNECTS:
            log.info("events websocket unavailable; polling task %s instead", task_id)
            return tasks._poll(task_id, deadline, progress, poll_interval)
        try:
            with connect(url, additional_headers={"Authorization": f"Bearer {client.access_token}"},
                         open_timeout=10,
                         proxy=True if client.session.trust_env else None) as socket:
                socket.recv(timeout=10)  # the server's hello: from here on, events reach us
                failures = 0
                read = True
                while True:
                    task = tasks._read(task_id) if read else None
                    if task is not None:
                        last = task["status"]
                        if last in FINAL_TASK_STATUSES:
                            return task
                    remaining = _remaining(deadline)
                    if remaining == 0:
                        raise tasks._late(task_id, last)
                    # Until the next event, or a quiet spell after which the status is read again
                    # (soon, when the end was announced but could not be read back).
                    spell = poll_interval if last in FINAL_TASK_STATUSES else quiet
                    try:
                        event = _next_event(socket, task_id, spell if remaining is None else min(spell, remaining))
                    except TimeoutError:
                        read = True
                        continue
                    if progress is not None:
                        progress(event)
                    # On the end, read the task back: the caller gets it as the API shows it.
                    read = event["type"] == "task.completed"
                    if read:
                        last = event["task"].get("status", last)
        except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
            log.info("events websocket for task %s lost (%s); reading the status and reconnecting", task_id, exc)
        task = tasks._read(task_id)
        if task is not None:
            failures += 1
            last = task["status"]
            if last in FINAL_TASK_STATUSES:
                return task
        if _remaining(deadline) == 0:
            raise tasks._late(task_id, last)
        time.sleep(min(RECONNECT_PAUSE, _remaining(deadline) or RECONNECT_PAUSE))


def _next_event(socket, task_id: int, timeout: float) -> dict:
    """The next event about this task; TimeoutError when none comes within `timeout`."""
    until = time.monotonic() + timeout
    while True:
        frame = socket.recv(timeout=max(0.0, until - time.monotonic()))
        try:
            event = json.loads(frame)
        except ValueError:
            continue
        if isinstance(event, dict) and _ours(event, task_id):
            return event
