"""Bearer JWTs of users (core.authentication has the base and the verified-token cache).

A user token holds the key of its API login (claim `login`, accounts.models.ApiLogin):
the login's row is read with the user on every request, in one query, so a logout, a
password change or a deactivation stops the token on the very next request, in every
server process.

Nothing about a principal is cached between requests: each is read from the database,
the one place a revocation is written. The read is a prepared query (core.prepared):
building its SQL with the ORM on every request cost more than a cache saved.
"""

from django.conf import settings
from rest_framework import exceptions
from rest_framework_simplejwt.exceptions import TokenError

from accounts.models import User
from accounts.services import LOGIN_CLAIM
from core.authentication import BearerTokenAuthentication, verified_token
from core.prepared import PreparedQuery

# The user, only while the API login named in the token still exists: one query.
_user_of_login = PreparedQuery(lambda *, user_id, key: User.objects.filter(pk=user_id, api_logins__key=key),
                               "user_id", "key")


class UserTokenAuthentication(BearerTokenAuthentication):
    """A user's token; listed last of the bearer kinds, it refuses every token the others left."""

    def token(self, raw: bytes):
        try:
            return verified_token(raw)
        except (TokenError, UnicodeDecodeError):
            raise exceptions.AuthenticationFailed("Token is invalid or expired.", code="token_not_valid")

    def principal(self, token) -> User:
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
