"""Bearer JWTs of node agents (core.authentication has the base and the verified-token cache).

A node token holds `node_id` and the key prefix it was issued for, so rotating a node's
key revokes every token issued under the old one. The node's row is read on every
request (a prepared query, core.prepared), never cached.
"""

from django.conf import settings
from rest_framework import exceptions
from rest_framework_simplejwt.tokens import AccessToken

from collaborations.models import Node
from core.authentication import BearerTokenAuthentication, verified_token_or_none
from core.prepared import PreparedQuery

NODE_CLAIM = "node_id"
NODE_KEY_CLAIM = "node_key"

_node = PreparedQuery(lambda *, node_id: Node.objects.filter(pk=node_id), "node_id")


def node_access_token(node: Node) -> AccessToken:
    token = AccessToken()
    token.set_exp(lifetime=settings.VANTAGE_NODE_TOKEN_LIFETIME)
    token[NODE_CLAIM] = node.pk
    token[NODE_KEY_CLAIM] = node.api_key_prefix
    return token


class NodeTokenAuthentication(BearerTokenAuthentication):
    def token(self, raw: bytes):
        token = verified_token_or_none(raw)
        return token if token is not None and NODE_CLAIM in token else None

    def principal(self, token) -> Node:
        node_id = token[NODE_CLAIM]
        node = _node.first(node_id=node_id) if type(node_id) is int else None
        if node is None or node.api_key_prefix != token.get(NODE_KEY_CLAIM):
            raise exceptions.AuthenticationFailed("Node token is no longer valid.", code="token_not_valid")
        return node
