"""JWT authentication for users, node agents and algorithm containers on one header.

All carry `Authorization: Bearer <jwt>` signed with the server key. A user token holds
the key of its API login (claim `login`, accounts.models.ApiLogin): the login's row is
read with the user on every request, in one query, so a logout, a password change or a
deactivation stops the token on the very next request, in every server process. A node
token holds `node_id` and the key prefix it was issued for, so rotating a node's key
revokes every token issued under the old one. A container token
(tasks.container_tokens) holds its run and its node's key prefix; it is accepted by the
REST API only, never on a websocket.

Nothing about a principal is cached between requests: each is read from the database,
the one place a revocation is written. The reads are prepared queries (core.prepared):
building their SQL with the ORM on every request cost more than a cache saved.

What is cached is the check of a token's signature and claims, which costs about as
much as the rest of a small request: each process remembers the tokens it has verified
until they expire. That cannot keep a revoked token alive: revocation acts on the rows
read above (the login, the user, the node's key, the container's run), never on the
signature.
"""

import threading
import time

from django.conf import settings
from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from accounts.services import LOGIN_CLAIM
from collaborations.models import Node
from core.prepared import PreparedQuery
from tasks.container_tokens import CONTAINER_CLAIM, container_principal, container_token_claims

NODE_CLAIM = "node_id"
NODE_KEY_CLAIM = "node_key"
VERIFIED_TOKENS_MAX = 10_000

_verified_lock = threading.Lock()
_verified: dict[bytes, AccessToken] = {}

# The user, only while the API login named in the token still exists: one query.
_user_of_login = PreparedQuery(lambda *, user_id, key: User.objects.filter(pk=user_id, api_logins__key=key),
                               "user_id", "key")
_node = PreparedQuery(lambda *, node_id: Node.objects.filter(pk=node_id), "node_id")


def verified_token(raw: bytes) -> AccessToken:
    """The token, checked (signature, type, expiry) when this process first saw it.

    The cached token objects are shared between requests: read them, never change them.
    """
    token = _verified.get(raw)
    if token is not None and time.time() < token.payload["exp"]:
        return token
    token = AccessToken(raw.decode())  # TokenError or UnicodeDecodeError when it is not valid
    with _verified_lock:
        if len(_verified) >= VERIFIED_TOKENS_MAX:
            now = time.time()
            for key in [key for key, known in _verified.items() if known.payload["exp"] <= now]:
                del _verified[key]
            if len(_verified) >= VERIFIED_TOKENS_MAX:
                _verified.clear()
        _verified[raw] = token
    return token


def node_access_token(node: Node) -> AccessToken:
    token = AccessToken()
    token.set_exp(lifetime=settings.VANTAGE_NODE_TOKEN_LIFETIME)
    token[NODE_CLAIM] = node.pk
    token[NODE_KEY_CLAIM] = node.api_key_prefix
    return token


class NodeOrUserJWTAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        # From META, as DRF did before 3.16: its get_authorization_header builds
        # request.headers, a parsed copy of every header, for this one.
        header = request.META.get("HTTP_AUTHORIZATION", b"")
        if isinstance(header, str):
            header = header.encode(HTTP_HEADER_ENCODING)
        header = header.split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        return self.authenticate_token(header[1], allow_container=True)

    def authenticate_token(self, raw: bytes, *, allow_container: bool = False):
        """(principal, token) for a raw JWT; used by the REST API and the websocket handshake."""
        try:
            token = verified_token(raw)
        except (TokenError, UnicodeDecodeError):
            # A container token's `sub` is vantage6's identity object, which AccessToken refuses.
            token = self._container_claims(raw)
        if CONTAINER_CLAIM in token:
            if not allow_container:
                raise exceptions.AuthenticationFailed("Container tokens are accepted by the REST API only.")
            # Never from the principal cache: a finished run must stop its token at once.
            return container_principal(token), token
        if NODE_CLAIM in token:
            return self._node(token), token
        return self._user(token), token

    def _container_claims(self, raw: bytes) -> dict:
        try:
            return container_token_claims(raw.decode())
        except (TokenError, UnicodeDecodeError):
            raise exceptions.AuthenticationFailed("Token is invalid or expired.", code="token_not_valid")

    def _node(self, token) -> Node:
        node_id = token[NODE_CLAIM]
        node = _node.first(node_id=node_id) if type(node_id) is int else None
        if node is None or node.api_key_prefix != token.get(NODE_KEY_CLAIM):
            raise exceptions.AuthenticationFailed("Node token is no longer valid.", code="token_not_valid")
        return node

    def _user(self, token):
        user_id = str(token.get(settings.SIMPLE_JWT.get("USER_ID_CLAIM", "user_id")))
        login_key = token.get(LOGIN_CLAIM)
        # The access token's own expiry is checked; its login's row must still exist.
        user = None
        if isinstance(login_key, str) and user_id.isdigit():
            user = _user_of_login.first(user_id=int(user_id), key=login_key)
        if user is None:
            raise exceptions.AuthenticationFailed("This token was revoked (logout or password change): log in again.",
                                                  code="token_revoked")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User is inactive or unknown.", code="user_inactive")
        return user

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
