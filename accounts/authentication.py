"""JWT authentication for users, node agents and algorithm containers on one header.

All carry `Authorization: Bearer <jwt>` signed with the server key. A node token holds
`node_id` and the key prefix it was issued for, so rotating a node's key revokes every
token issued under the old one. A container token (tasks.container_tokens) holds its run
and its node's key prefix; it is accepted by the REST API only, never on a websocket.

Checking a token's signature and claims cost about as much as the rest of a small
request, so each process remembers the tokens it has verified until they expire.
Revocation is not affected: it acts on the principal (the user's state and roles, the
node's key, the container's run), which is checked on every request as before.
"""

import threading
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts import principal_cache
from accounts.permissions import rule_scopes, set_rule_scopes
from collaborations.models import Node
from tasks.container_tokens import CONTAINER_CLAIM, container_principal, container_token_claims

NODE_CLAIM = "node_id"
NODE_KEY_CLAIM = "node_key"
VERIFIED_TOKENS_MAX = 10_000

_verified_lock = threading.Lock()
_verified: dict[bytes, AccessToken] = {}


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
        version = principal_cache.current_version()
        cached = principal_cache.get("node", node_id, version)
        if cached is not None:
            node = principal_cache.rebuild(Node, cached[0])
        else:
            node = Node.objects.filter(pk=node_id).first()
            if node is not None:
                principal_cache.put("node", node_id, version, principal_cache.field_values(node), None)
        if node is None or node.api_key_prefix != token.get(NODE_KEY_CLAIM):
            raise exceptions.AuthenticationFailed("Node token is no longer valid.", code="token_not_valid")
        return node

    def _user(self, token):
        User = get_user_model()
        user_id = token.get(settings.SIMPLE_JWT.get("USER_ID_CLAIM", "user_id"))
        version = principal_cache.current_version()
        cached = principal_cache.get("user", user_id, version)
        if cached is not None:
            user = principal_cache.rebuild(User, cached[0])
            set_rule_scopes(user, dict(cached[1]))
        else:
            user = User.objects.filter(pk=user_id).first()
            if user is not None:
                principal_cache.put("user", user_id, version, principal_cache.field_values(user), rule_scopes(user))
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed("User is inactive or unknown.", code="user_inactive")
        return user

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
