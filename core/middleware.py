"""Django's browser middleware, left out of API requests that carry a bearer token.

Node agents, algorithm containers, the Python client and scripts call the API with
`Authorization: Bearer <jwt>`: no cookies, so no session, no CSRF token, no messages,
and the user comes from the token (DRF sets it on the request). Sessions, CSRF, the
session user and messages still ran for every such request: 50-60 us of a node's
~0.9 ms finish request in Django (in-process, three alternating pairs; bench/README.md).

Each class here is Django's own, passing a bearer-token API request straight on. They
stay subclasses of Django's classes, so the admin's checks (which look for the session,
authentication and messages middleware) hold. Everything else (the browser portal, the
admin, the API used with a session cookie) goes through the full middleware. A request
with both a cookie and a bearer token is authenticated by its token only, as DRF does
for it anyway (the token authenticator comes first and refuses a bad token).
"""

from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.middleware import csrf

API_PREFIX = "/api/"


def is_token_api_request(request) -> bool:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    return request.path_info.startswith(API_PREFIX) and header[:7].lower() == "bearer "


class _BrowserOnly:
    def __call__(self, request):
        if not self.async_mode and is_token_api_request(request):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_BrowserOnly, sessions.SessionMiddleware):
    pass


class CsrfViewMiddleware(_BrowserOnly, csrf.CsrfViewMiddleware):
    """Its process_view still runs for every request: DRF's views are exempt, and for any
    other view a request without the CSRF cookie's token is refused, as before."""


class AuthenticationMiddleware(_BrowserOnly, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(_BrowserOnly, messages.MessageMiddleware):
    pass
