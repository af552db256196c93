"""What every websocket consumer shares: accepting the right principal, and closing the
sockets of a session or a user that was signed out (the consumers are in
collaborations.consumers).
"""

import hashlib

from accounts.permissions import is_node
from core import events

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


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
