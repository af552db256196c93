"""`/ws/events/`: live events for researchers and the portal.

Thin by design: authenticate (middleware), read the user's scopes and collaborations
once on connect, join groups, forward what this user may see. Never writes.
"""

import hashlib

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.models import Action, Resource, Scope
from accounts.permissions import is_node, user_scope
from core import events

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
WATCHED = (Resource.TASK, Resource.RUN, Resource.NODE)


def session_fingerprint(session_key: str) -> str:
    """What travels over the channel layer instead of the session key itself (a secret)."""
    return hashlib.sha256(session_key.encode()).hexdigest()


def close_session_sockets(sender, request, user, **kwargs) -> None:
    """user_logged_out: close the sockets opened with that session, wherever they are served.

    The session's cookie no longer opens a socket after logout; this ends the ones already
    open (another tab, another server process), which would otherwise go on receiving events.
    """
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is None or not session_key:
        return
    message = {"type": "session.ended", "session": session_fingerprint(session_key)}
    events.send_to_consumers([events.user_group(user.pk)], message)


def close_user_sockets(user_id: int) -> None:
    """After every session of a user was ended: close all of that user's sockets, in every
    server process (accounts.services.user_end_sessions, on commit)."""
    events.send_to_consumers([events.user_group(user_id)], {"type": "user.sessions_ended", "user": user_id})


async def accept_principal(consumer, *, node: bool, wrong_kind_reason: str):
    """Accept the socket, then close it with a code and reason unless the middleware
    authenticated the right kind of principal (a node, or a user); returns it or None.

    Accepting before closing lets the client read why, instead of a bare HTTP 403.
    """
    principal = consumer.scope.get("principal")
    await consumer.accept()
    if principal is None:
        await consumer.close(code=CLOSE_UNAUTHENTICATED, reason=consumer.scope.get("auth_error") or "unauthenticated")
        return None
    if is_node(principal) != node:
        await consumer.close(code=CLOSE_FORBIDDEN, reason=wrong_kind_reason)
        return None
    return principal


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
        from collaborations.selectors import member_collaboration_ids

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
