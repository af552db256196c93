"""Every API error answers JSON, whatever raised it.

DRF renders the errors of its views, but a URL that matches no view (404), an exception
that escapes a view (500) and Django's own refusals (400 for a bad Host, 403 for CSRF)
are rendered by Django: with DEBUG its technical HTML pages (which show settings and
code), without DEBUG its plain HTML pages. Clients of `/api/` parse JSON only, so this
middleware, first in the list, replaces such a body under `/api/` with
`{"detail": ..., "code": ...}` and keeps the status. Django still logs the exception.
"""

from http import HTTPStatus

from django.http import JsonResponse

API_PREFIX = "/api/"
_CODES = {400: "bad_request", 403: "permission_denied", 404: "not_found", 405: "method_not_allowed",
          413: "too_large", 500: "server_error"}


class ApiErrorsAsJson:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path_info.startswith(API_PREFIX)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return _json_error(response.status_code)
        return response


def _json_error(status: int) -> JsonResponse:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    detail = "Internal server error." if status == 500 else f"{phrase}."
    return JsonResponse({"detail": detail, "code": _CODES.get(status, "error")}, status=status)
