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

import logging

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


def publish(groups: list[str], event: dict) -> None:
    """Send now. A failing channel layer must not fail the request that already committed."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "event.forward", "event": event}
    try:
        for group in groups:
            async_to_sync(layer.group_send)(group, message)
    except Exception:  # the change is committed; clients catch up by listing on reconnect
        log.exception("could not publish %s to %s", event.get("type"), groups)


def publish_on_commit(groups: list[str], event: dict) -> None:
    transaction.on_commit(lambda: publish(groups, event))


def publish_to_users_on_commit(collaboration_id: int, event: dict) -> None:
    publish_on_commit([collaboration_group(collaboration_id), GLOBAL_GROUP], event)
