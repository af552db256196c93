"""The portal's own writes: opening and closing a browser session.

Logging in follows the one set of rules of accounts.services.login_authenticate, shared
with the API and the admin: lockout, second factor, the same answers. Everything else the
portal changes goes through the apps' services.
"""

from django.contrib.auth import login, logout
from django.http import HttpRequest

from accounts import services as account_services
from accounts.models import User

LoginRefused = account_services.LoginRefused


def session_login(*, request: HttpRequest, username: str, password: str, otp: str = "") -> User:
    """Check the credentials (and second factor) and start a session for the user.

    A user who must have a second factor but has none yet gets in, to set one up: every
    other page sends them to the security page until they have (portal.views.portal_page).
    """
    user = account_services.login_authenticate(request=request, username=username, password=password,
                                               otp=otp or None, allow_enrolment=True)
    # login() also rotates the session key and the CSRF token, so a token planted before
    # login is worthless after it.
    login(request, user)
    return user


def session_logout(*, request: HttpRequest) -> None:
    """End the browser session; its websocket is refused from the next connect on."""
    user = request.user if request.user.is_authenticated else None
    if user is not None:
        account_services.user_logout(user=user, login_key=None, request=request)
    logout(request)


def session_logout_everywhere(*, request: HttpRequest) -> None:
    """End every session, API login and websocket of the user, this one included."""
    account_services.user_end_sessions(actor=request.user, user=request.user, reason="logout_everywhere",
                                       request=request)
    logout(request)
