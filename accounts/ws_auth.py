"""Websocket authentication and origin checks, before any consumer runs.

- Node agents and API clients send `Authorization: Bearer <jwt>` on the handshake
  (user or node token, the same tokens as the REST API).
- The browser portal has no way to set headers on a websocket: it uses its session
  cookie, and then the Origin header must be the server's own origin (scheme, host and
  port, as the handshake reached it; the host one of ALLOWED_HOSTS) or one of
  CSRF_TRUSTED_ORIGINS (behind a TLS proxy), so another site cannot ride on the cookie.
  Comparing the host alone let any port or plain http on that host in.

The outcome goes into scope["principal"] (None when refused) and scope["auth_error"];
the consumer accepts and closes with code 4401 and that reason, so clients can tell a
bad token from a network failure and stop retrying.
"""

from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.http.request import validate_host
from rest_framework.exceptions import AuthenticationFailed

from core.authentication import websocket_principal


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, the port made explicit; None if malformed."""
    try:
        parts = urlsplit(origin)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return None
        return scheme, parts.hostname.lower(), parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:  # a port out of range or not a number
        return None


def _origin_allowed(scope, origin: bytes) -> bool:
    found = _origin_tuple(origin.decode("latin1"))
    if found is None:
        return False
    if any(found == _origin_tuple(trusted) for trusted in settings.CSRF_TRUSTED_ORIGINS):
        return True
    host = _header(scope, b"host")
    if host is None:
        return False
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    own = _origin_tuple(f"{scheme}://{host.decode('latin1')}")
    return own is not None and found == own and validate_host(own[1], settings.ALLOWED_HOSTS)


@database_sync_to_async
def _principal_from_token(authorization: bytes):
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        raise AuthenticationFailed("Expected 'Authorization: Bearer <token>'.")
    return websocket_principal(parts[1])


@database_sync_to_async
def _user_from_session(scope):
    from django.contrib.auth import get_user

    class _SessionRequest:
        session = scope["session"]

    user = get_user(_SessionRequest())
    if not user.is_authenticated:
        return None
    return type(user).objects.select_related("organization").get(pk=user.pk)


class _PrincipalMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        scope["principal"], scope["auth_error"] = None, ""
        authorization = _header(scope, b"authorization")
        origin = _header(scope, b"origin")
        if origin is not None and not _origin_allowed(scope, origin):
            scope["auth_error"] = "origin not allowed"
        elif authorization:
            try:
                scope["principal"] = await _principal_from_token(authorization)
            except AuthenticationFailed as exc:
                scope["auth_error"] = str(exc.detail)
        elif origin is not None:
            scope["principal"] = await _user_from_session(scope)
            if scope["principal"] is None:
                scope["auth_error"] = "not logged in"
        else:
            scope["auth_error"] = "authentication required"
        return await super().__call__(scope, receive, send)


def WebsocketAuthMiddleware(inner):
    return CookieMiddleware(SessionMiddleware(_PrincipalMiddleware(inner)))
