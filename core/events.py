"""Publishing events to websocket groups, only after the change has committed.

Group names:
- `nodes.o<org>.c<collab>`: every node that may claim that organisation's runs there;
- `node.<id>`: one node (kill requests for runs it holds);
- `collab.<id>`: users whose organisation is a member of the collaboration;
- `events.global`: users whose roles see everything;
- `user.<id>`: one user.

Each event carries `visibility` (resource, collaboration, organisations, owner) so the
user consumer can drop what this particular user may not see without a query.
"""

import asyncio
import collections
import logging
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

GLOBAL_GROUP = "events.global"


def node_pool_group(organization_id: int, collaboration_id: int) -> str:
    return f"nodes.o{organization_id}.c{collaboration_id}"


def node_group(node_id: int) -> str:
    return f"node.{node_id}"


def collaboration_group(collaboration_id: int) -> str:
    return f"collab.{collaboration_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def visibility(resource: str, *, collaboration: int, organizations: list[int], owner: int | None = None) -> dict:
    return {"resource": resource, "collaboration": collaboration, "organizations": organizations, "owner": owner}


class _LoopPublisher:
    """Publishes from worker threads through the server's event loop.

    HTTP requests run on plain worker threads (vantage.wsgi_bridge). Calling the channel
    layer from there with async_to_sync would start a new event loop in a new thread
    per event (milliseconds each), and the in-memory layer's queues belong to the
    server's loop. Instead events wait in a queue that one task on that loop sends, one
    at a time, in commit order, while the request goes on. Waking the loop costs about
    as much as sending, so a request's events share one wake-up, and none is needed
    while the task is still sending earlier ones.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: collections.deque = collections.deque()
        self.lock = threading.Lock()
        self.scheduled = False
        self.task: asyncio.Task | None = None

    def submit(self, groups: list[str], message: dict) -> None:
        with self.lock:
            self.pending.append((groups, message))
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while True:
                with self.lock:
                    if not self.pending:
                        self.scheduled = False
                        return
                    groups, message = self.pending.popleft()
                await _send(groups, message)
        finally:  # cancelled (the loop is closing): the next event starts a new task
            with self.lock:
                self.scheduled = False


_publisher: _LoopPublisher | None = None


def attach_to_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Called from the server's event loop: route later publishing through it."""
    global _publisher
    if _publisher is None or _publisher.loop is not loop:
        _publisher = _LoopPublisher(loop)


async def _send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        for group in groups:
            await layer.group_send(group, message)
    except Exception:  # the change is committed; clients catch up by listing on reconnect
        what = message["event"].get("type") if "event" in message else message["type"]
        log.exception("could not publish %s to %s", what, groups)


def publish(groups: list[str], event: dict) -> None:
    """Send after the fact: a failing channel layer must not fail a committed request."""
    send_to_consumers(groups, {"type": "event.forward", "event": event})


def send_to_consumers(groups: list[str], message: dict) -> None:
    """A channel-layer message to the consumers in `groups` (its type names their handler)."""
    layer = get_channel_layer()
    listened = getattr(layer, "listened_groups", None)
    if listened is not None:
        # The in-process layer knows its groups: most events go to groups nobody listens
        # to right now, and need not wake the event loop. (A consumer joining meanwhile
        # lists what it missed, as after any reconnect.)
        groups = listened(groups)
        if not groups:
            return
    publisher = _publisher
    if publisher is not None and publisher.loop.is_running() and not _on_loop(publisher.loop):
        publisher.submit(groups, message)
        return
    # No server loop here (Celery worker, management command, tests): send directly.
    async_to_sync(_send)(groups, message)


def anyone_listening(groups: list[str]) -> bool:
    """Whether an event to `groups` may reach someone: always, unless the channel layer
    is this process's own and nobody here listens to any of them."""
    listened = getattr(get_channel_layer(), "listened_groups", None)
    return listened is None or bool(listened(groups))


def _on_loop(loop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def publish_on_commit(groups: list[str], event: dict) -> None:
    transaction.on_commit(lambda: publish(groups, event))


def publish_to_users_on_commit(collaboration_id: int, event: dict) -> None:
    publish_on_commit([collaboration_group(collaboration_id), GLOBAL_GROUP], event)
