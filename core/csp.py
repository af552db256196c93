"""A Content-Security-Policy for the pages Django and drf-spectacular render: the admin
and the API's documentation (the portal sets its own, stricter one in portal.views).

Scripts and everything else load from this server only (the admin's own files, Swagger
UI from drf-spectacular-sidecar, both served by WhiteNoise), and no inline script runs.
Inline styles are allowed: the admin's widgets and Swagger UI set style attributes,
which cannot run code.
"""

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PREFIXES = ("/admin/", "/api/docs/")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path_info.startswith(PREFIXES):
            response.setdefault("Content-Security-Policy", POLICY)
        return response
