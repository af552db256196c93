"""Bearer JWTs of algorithm containers (tasks.container_tokens issues and checks them).

Accepted by the REST API only, never on a websocket. The principal is read fresh on
every request, never cached: a finished run must stop its token at once.
"""

from rest_framework_simplejwt.exceptions import TokenError

from core.authentication import BearerTokenAuthentication, verified_token_or_none
from tasks.container_tokens import CONTAINER_CLAIM, ContainerPrincipal, container_principal, container_token_claims


class ContainerTokenAuthentication(BearerTokenAuthentication):
    websocket = False

    def token(self, raw: bytes):
        token = verified_token_or_none(raw)
        if token is not None:
            return token if CONTAINER_CLAIM in token else None
        # A container token's `sub` is vantage6's identity object, which AccessToken refuses.
        try:
            return container_token_claims(raw.decode())
        except (TokenError, UnicodeDecodeError):
            return None

    def principal(self, token) -> ContainerPrincipal:
        return container_principal(token)
