"""`/ws/events/`: live events for researchers and the portal; `/ws/node/`: the node agent's live channel.

Thin by design: authenticate (middleware, accounts.ws_auth), read the user's scopes and
collaborations once on connect, join groups, forward what this principal may see. The
events consumer never writes.

The node joins the group of its organisation × collaboration (new runs it may claim) and
its own group (kill requests), and sends heartbeats. Heartbeats touch the database at
most once per HEARTBEAT_WRITE_SECONDS per connection: a node beating every few seconds
costs no write per beat, and the housekeeping job still sees it as alive.
"""

import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.consumers import CLOSE_UNAUTHENTICATED, accept_principal, session_fingerprint
from accounts.models import Action, Resource, Scope
from accounts.permissions import user_scope
from collaborations.selectors import member_collaboration_ids
from collaborations.services import node_heartbeat
from core import events

HEARTBEAT_WRITE_SECONDS = 30
WATCHED = (Resource.TASK, Resource.RUN, Resource.NODE)


class EventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        principal = await accept_principal(self, node=False, wrong_kind_reason="nodes connect to /ws/node/")
        if principal is None:
            return
        self.user = principal
        self.scopes, self.collaborations = await self._load_visibility()
        if Scope.GLOBAL in self.scopes.values():
            self.groups_joined = [events.GLOBAL_GROUP]
        else:
            self.groups_joined = [events.collaboration_group(c) for c in self.collaborations]
        self.groups_joined.append(events.user_group(self.user.pk))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.send_json({"type": "hello", "user": self.user.pk, "collaborations": sorted(self.collaborations)})

    @database_sync_to_async
    def _load_visibility(self):
        scopes = {r: user_scope(self.user, r, Action.VIEW) for r in WATCHED}
        collaborations = set(
            member_collaboration_ids(self.user.organization_id).values_list("collaboration_id", flat=True)
        )
        return scopes, collaborations

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def session_ended(self, message):
        """The browser session this socket was opened with was logged out (in any tab)."""
        session = self.scope.get("session")
        key = getattr(session, "session_key", None) if self.scope.get("principal") is not None else None
        if key and session_fingerprint(key) == message["session"]:
            await self.close(code=CLOSE_UNAUTHENTICATED, reason="logged out")

    async def user_sessions_ended(self, message):
        """Every session and token of this user was ended (logout everywhere, password change...)."""
        if message.get("user") == getattr(getattr(self, "user", None), "pk", None):
            await self.close(code=CLOSE_UNAUTHENTICATED, reason="signed out everywhere")

    async def event_forward(self, message):
        event = message["event"]
        if self.may_see(event.get("visibility") or {}):
            await self.send_json(event)

    def may_see(self, vis: dict) -> bool:
        scope = self.scopes.get(vis.get("resource"))
        if scope is None:
            return False
        if scope == Scope.GLOBAL:
            return True
        if scope == Scope.COLLABORATION:
            return vis.get("collaboration") in self.collaborations
        if scope == Scope.ORGANIZATION:
            return self.user.organization_id in (vis.get("organizations") or [])
        return vis.get("owner") == self.user.pk


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
