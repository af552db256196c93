"""The portal's own writes: opening and closing a browser session.

Logging in follows the API's rules (accounts.api.LoginView): a locked account is refused
even with the right password, each failure counts towards the lockout, a success clears
the count. Everything else the portal changes goes through the apps' services.
"""

from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest
from django.utils import timezone

from accounts import selectors as account_selectors
from accounts import services as account_services
from accounts.models import User
from vantage.errors import DomainError

WRONG_CREDENTIALS = "Wrong username or password, or the account is disabled."


class LoginRefused(DomainError):
    status_code = 401
    default_code = "login_refused"


def session_login(*, request: HttpRequest, username: str, password: str) -> User:
    """Check the credentials under the lockout rules and start a session for the user."""
    known = account_selectors.user_login_state(username=username)
    if known is not None and known.is_locked(timezone.now()):
        raise LoginRefused(
            f"Too many failed logins: this account is locked until {known.locked_until:%Y-%m-%d %H:%M} UTC.",
            code="account_locked",
        )
    # ModelBackend answers None for inactive accounts too.
    user = authenticate(request, username=username, password=password)
    if user is None:
        if known is not None:
            account_services.login_failed(user_id=known.pk)
        raise LoginRefused(WRONG_CREDENTIALS)
    account_services.login_succeeded(user=user)
    # login() also rotates the session key and the CSRF token, so a token planted before
    # login is worthless after it.
    login(request, user)
    return user


def session_logout(*, request: HttpRequest) -> None:
    """End the browser session; its websocket is refused from the next connect on."""
    logout(request)
