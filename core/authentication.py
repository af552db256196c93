"""Bearer JWTs on one header: the base of each kind's authentication class.

Users, node agents and algorithm containers all send `Authorization: Bearer <jwt>`
signed with the server key. Each kind has its own class, living with the model it
authenticates (accounts.authentication, collaborations.authentication,
tasks.authentication), and REST_FRAMEWORK's DEFAULT_AUTHENTICATION_CLASSES lists them:
the first whose `token()` recognises a token authenticates it, the last one (users)
takes every token the others left and refuses what it cannot verify.

What is cached is the check of a token's signature and claims, which costs about as
much as the rest of a small request: each process remembers the tokens it has verified
until they expire. That cannot keep a revoked token alive: revocation acts on the rows
each class reads for its principal on every request (the login, the user, the node's
key, the container's run), never on the signature.
"""

import threading
import time

from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.settings import api_settings
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

VERIFIED_TOKENS_MAX = 10_000

_verified_lock = threading.Lock()
_verified: dict[bytes, AccessToken] = {}


def verified_token(raw: bytes) -> AccessToken:
    """The token, checked (signature, type, expiry) when this process first saw it.

    TokenError or UnicodeDecodeError when it is not valid. The cached token objects are
    shared between requests: read them, never change them.
    """
    token = _verified.get(raw)
    if token is not None and time.time() < token.payload["exp"]:
        return token
    token = AccessToken(raw.decode())
    with _verified_lock:
        if len(_verified) >= VERIFIED_TOKENS_MAX:
            now = time.time()
            for key in [key for key, known in _verified.items() if known.payload["exp"] <= now]:
                del _verified[key]
            if len(_verified) >= VERIFIED_TOKENS_MAX:
                _verified.clear()
        _verified[raw] = token
    return token


def verified_token_or_none(raw: bytes) -> AccessToken | None:
    try:
        return verified_token(raw)
    except (TokenError, UnicodeDecodeError):
        return None


def _bearer(request) -> bytes | None:
    # From META, as DRF did before 3.16: its get_authorization_header builds
    # request.headers, a parsed copy of every header, for this one.
    header = request.META.get("HTTP_AUTHORIZATION", b"")
    if isinstance(header, str):
        header = header.encode(HTTP_HEADER_ENCODING)
    header = header.split()
    if not header or header[0].lower() != b"bearer":
        return None
    if len(header) != 2:
        raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
    return header[1]


class BearerTokenAuthentication(BaseAuthentication):
    """One kind of bearer JWT: `token()` recognises it, `principal()` reads who it stands for."""

    websocket = True  # also accepted on the websocket handshake (accounts.ws_auth)

    def token(self, raw: bytes):
        """The verified claims when `raw` is a token of this kind, else None."""
        raise NotImplementedError

    def principal(self, token):
        """The principal the token stands for now; AuthenticationFailed once it no longer holds."""
        raise NotImplementedError

    def authenticate(self, request):
        raw = _bearer(request)
        if raw is None:
            return None
        token = self.token(raw)
        if token is None:
            return None
        return self.principal(token), token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


def _bearer_kinds() -> list[BearerTokenAuthentication]:
    return [cls() for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES if issubclass(cls, BearerTokenAuthentication)]


def websocket_principal(raw: bytes):
    """The principal of a bearer token on a websocket handshake, as the REST API would find it."""
    for kind in _bearer_kinds():
        token = kind.token(raw)
        if token is None:
            continue
        if not kind.websocket:
            raise exceptions.AuthenticationFailed("Tokens of this kind are accepted by the REST API only.")
        return kind.principal(token)
    raise exceptions.AuthenticationFailed("Token is invalid or expired.", code="token_not_valid")
