"""Content negotiation that answers the usual request without parsing its Accept header."""

from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, with a shortcut for the API's one renderer (JSON).

    Clients send `Accept: */*`, `application/json` or nothing; each of those picks the
    only renderer, as DRF's full parse would. Anything else (a format suffix or `?format=`,
    another media type, parameters, several renderers in DEBUG) goes through DRF's rules,
    including its 406 and 404 answers.
    """

    PLAIN_ACCEPT = frozenset({"*/*", "application/json"})

    def select_renderer(self, request, renderers, format_suffix=None):
        if (
            len(renderers) == 1
            and format_suffix is None
            and request.META.get("HTTP_ACCEPT", "*/*") in self.PLAIN_ACCEPT
            and renderers[0].media_type == "application/json"
            and self.settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)
