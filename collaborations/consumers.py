"""`/ws/node/`: the node agent's live channel.

The node joins the group of its organisation × collaboration (new runs it may claim) and
its own group (kill requests), and sends heartbeats. Heartbeats touch the database at
most once per HEARTBEAT_WRITE_SECONDS per connection: a node beating every few seconds
costs no write per beat, and the housekeeping job still sees it as alive.
"""

import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.consumers import accept_principal
from collaborations.services import node_heartbeat
from core import events

HEARTBEAT_WRITE_SECONDS = 30


class NodeConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        principal = await accept_principal(self, node=True, wrong_kind_reason="users connect to /ws/events/")
        if principal is None:
            return
        self.node = principal
        self.groups_joined = [
            events.node_pool_group(self.node.organization_id, self.node.collaboration_id),
            events.node_group(self.node.pk),
        ]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self._beat()
        await self.send_json({"type": "hello", "node": self.node.pk})

    async def _beat(self):
        self.last_write = time.monotonic()
        await database_sync_to_async(node_heartbeat)(node_id=self.node.pk)

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):
            return
        if content.get("type") == "heartbeat":
            if time.monotonic() - self.last_write >= HEARTBEAT_WRITE_SECONDS:
                await self._beat()
            await self.send_json({"type": "heartbeat.ack"})

    async def event_forward(self, message):
        await self.send_json(message["event"])
